"""What a Pi is served at boot: its bake's boot files, and a cmdline.txt made for NFS.

Pure functions over text and paths, shared by the TFTP server and the fleet, so the
rules for a boot (which options an NFS root drops, which config.txt keys we strip)
live in one place and are unit-tested without a network; and ``BootSource``, all the
netboot servers know of the fleet behind them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..config import Settings

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
    """Everything the TFTP and HTTP boot servers need to boot one Pi into its bake."""

    serial: str
    bake_id: str
    #: The bake's boot files (its own links to its bakeform's boot partition).
    boot_dir: Path
    #: cmdline.txt as this Pi must see it.
    cmdline: str
    #: Where its boot.img and boot.sig are kept if the bake boots over HTTP, else None.
    http_dir: Path | None = None


class BootSource(Protocol):
    """What the TFTP server and dnsmasq's supervisor ask of the fleet, and tell it.

    Calls come from one thread per server (the TFTP server's database thread, dnsmasq's
    log reader); ``close`` releases what that thread holds (its database connection)."""

    def boot_target(self, serial: str, ip: str, model: str | None = None) -> BootTarget | None:
        """What the Pi ``serial`` asking from ``ip`` boots, or None: not served."""

    def turn_away(self, serial: str) -> None:
        """A Pi that is served nothing keeps booting: switch it off if it is free."""

    def record_boot(self, serial: str, message: str, data: dict[str, Any]) -> None:
        """A step of a Pi's boot (file served, transfer failed) for its timeline."""

    def record_dhcp(self, mac: str, message: str, data: dict[str, Any]) -> None:
        """What dnsmasq did for the Pi with ``mac``, for its timeline."""

    def check_stalled(self) -> int:
        """Mark the baked Pis whose userspace is past its deadline; how many."""

    def record_console(self, ip: str, lines: list[str]) -> bool:
        """Bootloader log lines sent from ``ip``, filed under the Pi at that address;
        False when no Pi may be sending from there (the lines are dropped)."""

    def close(self) -> None:
        """Release what the calling thread holds."""


#: Opens the boot source of one netboot process (with its own database connection).
SourceFactory = Callable[[Settings], BootSource]


#: NFS's own port, named beside a MOUNT port so a Pi's kernel needs no portmapper at all.
NFS_PORT = 2049


def render_cmdline(
    image_cmdline: str, nfs_server: str, root_export: str | Path, mount_port: int = 0
) -> str:
    """The image's kernel command line with its SD-card root replaced by our NFS root.

    Everything else the image asked for (consoles, quiet, cgroup options...) is kept. With
    ``mount_port`` the NFS options name the server's ports, for a server without rpcbind."""
    export = str(root_export)
    if not EXPORT_PATH_RE.fullmatch(export) or ".." in export.split("/"):
        raise ValueError(f"root export {export!r} is not a plain absolute path")
    kept = [
        option for option in image_cmdline.split() if option.split("=", 1)[0] not in SD_CARD_OPTIONS
    ]
    nfs = [
        "root=/dev/nfs",
        f"nfsroot={nfs_server}:{export},vers=3,tcp{_ports(mount_port)}",
        "rw",
        "ip=dhcp",
        "rootwait",
    ]
    return " ".join(kept + nfs) + "\n"


def _ports(mount_port: int) -> str:
    if not mount_port:
        return ""
    return f",port={NFS_PORT},mountport={mount_port},mountproto=tcp"


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


# -- TFTP request paths ---------------------------------------------------------------------

SERIAL_PREFIX_RE = re.compile(r"[0-9A-Fa-f]{8}")


class UnsafePath(ValueError):
    """A requested path that could name something outside a boot tree, or is not a
    path a Pi bootloader sends; the request is refused without touching the disk."""


@dataclass(frozen=True)
class RequestPath:
    """A TFTP file name split into the Pi's serial (None for unprefixed requests such
    as the Pi 3 ROM's ``bootcode.bin``) and the file's path inside the boot tree."""

    serial: str | None
    relative: str


def parse_request_path(raw: str) -> RequestPath:
    """Split and check a requested file name.

    Empty components are collapsed (the Pi 5 asks ``<serial>//config.txt``); ``..``,
    ``.``, absolute paths, backslashes and control characters are refused. A first
    component of 8 hex digits is the serial, compared as a number (``%08x``); any other
    path with a directory in it is refused, so only bare file names reach the
    firmware directory."""
    if not raw or any(ord(c) < 0x20 or c == "\\" for c in raw):
        raise UnsafePath(f"file name {raw!r} has control characters or backslashes")
    if raw.startswith("/"):
        raise UnsafePath(f"file name {raw!r} is absolute")
    parts = [part for part in raw.split("/") if part]
    if not parts or any(part in (".", "..") for part in parts):
        raise UnsafePath(f"file name {raw!r} is not a plain relative path")
    if len(parts) == 1:
        return RequestPath(None, parts[0])
    if not SERIAL_PREFIX_RE.fullmatch(parts[0]):
        raise UnsafePath(f"file name {raw!r} does not start with a serial")
    serial = f"{int(parts[0], 16) & 0xFFFFFFFF:08x}"
    return RequestPath(serial, "/".join(parts[1:]))


def find_boot_file(tree: Path, relative: str) -> Path | None:
    """The regular file ``relative`` names inside ``tree``, matching names
    case-insensitively as FAT does, or None.

    Each component is looked up among the real entries of the directory reached so
    far, so the result is always a path built from ``tree`` and names that exist in
    it; symlinks are never followed (a boot partition extracted from FAT has none)."""
    current = tree
    for part in relative.split("/"):
        if part in ("", ".", ".."):
            return None
        entry = _directory_entry(current, part)
        if entry is None:
            return None
        current = entry
    return current if current.is_file() and not current.is_symlink() else None


def _directory_entry(directory: Path, name: str) -> Path | None:
    """The entry of ``directory`` called ``name`` (exact match first, then ignoring
    case), never a symlink."""
    if directory.is_symlink() or not directory.is_dir():
        return None
    exact = directory / name
    if exact.exists() and not exact.is_symlink():
        return exact
    folded = name.casefold()
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.casefold() == folded and not entry.is_symlink():
                    return directory / entry.name
    except OSError:
        return None
    return None


#: Files bootloaders ask for to find out whether they exist (pi-netboot §2, pi-http-boot):
#: self-update images, the signed-boot marker, recovery, Pi 5's overlay map and armstub,
#: kernels tried in turn. "Not found" is their normal answer, not a fault to look into.
NORMAL_PROBES = frozenset(
    {
        "pieeprom.sig", "pieeprom.upd", "vl805.sig", "vl805.bin", "bootsig.bin",
        "recovery.elf", "autoboot.txt", "overlay_map.dtb", "armstub8-2712.bin",
        "kernel_2712.img", "kernel8_rt.img", "initramfs_2712", "initramfs8",
    }
)  # fmt: skip


def is_normal_probe(name: str) -> bool:
    """Whether a not-found for ``name`` (a path under the serial) is a bootloader's probe."""
    return name.rsplit("/", 1)[-1].lower() in NORMAL_PROBES


def human_size(size: int) -> str:
    """Bytes as people read them on a timeline: ``162 B``, ``55.0 kB``, ``2.2 MB``."""
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def served_message(name: str, size: int, seconds: float, protocol: str = "tftp") -> str:
    """A served file in words: ``start4.elf 2.2 MB in 0.21 s`` (``over HTTP`` added)."""
    over = " over HTTP" if protocol == "http" else ""
    return f"{name} {human_size(size)} in {seconds:.2f} s{over}"


def guess_model(requested: list[str]) -> str | None:
    """The board family a Pi's requested file names point to (pi-netboot §2): the Pi 4
    loads start4.elf, the Pi 3 bootcode.bin/start.elf, the Pi 5 no start*.elf at all
    but kernel_2712.img."""
    names = {name.rsplit("/", 1)[-1].lower() for name in requested}
    if names & {"start4.elf", "fixup4.dat", "start4x.elf", "start4cd.elf", "start4db.elf"}:
        return "4B"
    if names & {"bootcode.bin", "start.elf", "fixup.dat"}:
        return "3B"
    if "kernel_2712.img" in names or "initramfs_2712" in names:
        return "5"
    return None
