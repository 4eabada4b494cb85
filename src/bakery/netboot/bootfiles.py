"""What a Pi is served at boot: its bake's boot files, and a cmdline.txt made for NFS.

Pure functions over text and paths, shared by the TFTP server and the fleet, so the
rules for a boot (which options an NFS root drops, which config.txt keys we strip)
live in one place and are unit-tested without a network.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

#: Options of the image's own cmdline.txt that only make sense for an SD-card root
#: (pi-netboot §3.2): the root device and its checks, first-boot resize scripts, and
#: the ones we render ourselves.
SD_CARD_OPTIONS = (
    "root",
    "rootfstype",
    "fsck.repair",
    "fsck.mode",
    "init",
    "resize",
    "nfsroot",
    "ip",
    "rootwait",
    "rw",
    "ro",
    "rootflags",
)

EXPORT_PATH_RE = re.compile(r"^/[A-Za-z0-9._/-]+$")


@dataclass(frozen=True)
class BootTarget:
    """Everything the TFTP server needs to boot one Pi into its bake."""

    serial: str
    bake_id: str
    #: The bakeform's extracted boot partition.
    boot_dir: Path
    #: cmdline.txt as this Pi must see it.
    cmdline: str


def render_cmdline(image_cmdline: str, nfs_server: str, root_export: str | Path) -> str:
    """The image's kernel command line with its SD-card root replaced by our NFS root.

    Everything else the image asked for (consoles, quiet, cgroup options...) is kept."""
    export = str(root_export)
    if not EXPORT_PATH_RE.fullmatch(export) or ".." in export.split("/"):
        raise ValueError(f"root export {export!r} is not a plain absolute path")
    kept = [
        option for option in image_cmdline.split() if option.split("=", 1)[0] not in SD_CARD_OPTIONS
    ]
    nfs = [
        "root=/dev/nfs",
        f"nfsroot={nfs_server}:{export},vers=3,tcp",
        "rw",
        "ip=dhcp",
        "rootwait",
    ]
    return " ".join(kept + nfs) + "\n"


def adjust_config_txt(text: str, drop_keys: tuple[str, ...] | list[str]) -> str:
    """config.txt without the given settings (e.g. ``auto_initramfs``: an NFS root needs
    no initramfs, and skipping it saves ~10 MB of TFTP per boot, pi-netboot §8)."""
    if not drop_keys:
        return text
    dropped = set(drop_keys)
    lines = [
        line
        for line in text.splitlines(keepends=True)
        if line.split("=", 1)[0].strip() not in dropped
    ]
    return "".join(lines)
