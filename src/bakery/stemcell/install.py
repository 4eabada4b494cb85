"""The disk agent's files and how they are laid into a root tree.

A root comes from an uploaded image, so everything here goes through the symlink-safe
writers of `bakery.roots`; the same list of entries is what `bakery.stemcell.build`
injects into a stemcell image, so both ways of installing give a Pi the same agent.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from bakery import roots

UNIT_DIR = "etc/systemd/system"
DISK_AGENT = "bakery-disk-agent"
#: Where the disk agent links each attached disk's loop device (its LINK_PREFIX).
DISK_LINK_PREFIX = "/dev/disk/by-id/bakery-"


def disk_device(disk_id: str) -> str:
    """The device a disk is on its Pi once the disk agent attached it: what the BOSH agent
    is told its persistent disks are."""
    return DISK_LINK_PREFIX + disk_id


@dataclass(frozen=True)
class RootFile:
    """A regular file at `path` (relative to the root), owned by root unless told."""

    path: str
    data: bytes
    mode: int = 0o644
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class RootLink:
    """A symlink at `path` (relative to the root) pointing at `target`."""

    path: str
    target: str


RootEntry = RootFile | RootLink


def packaged_file(name: str) -> bytes:
    """A file of ``bakery/stemcell/files``, read through importlib so that it is found in
    an installed package as well as in the source tree."""
    return resources.files(__package__).joinpath("files", name).read_bytes()


def unit_entries(unit: str, target: str) -> list[RootEntry]:
    """The unit file `unit` in /etc/systemd/system, enabled the way ``systemctl enable``
    does it: a link in ``<target>.wants`` (no systemctl runs for a foreign root)."""
    return [
        RootFile(f"{UNIT_DIR}/{unit}", packaged_file(unit)),
        RootLink(f"{UNIT_DIR}/{target}.wants/{unit}", f"/{UNIT_DIR}/{unit}"),
    ]


def disk_agent_entries() -> list[RootEntry]:
    """The disk agent script, its oneshot service (enabled: it runs at boot, before the
    services that keep their state on its disks) and the enabled timer that runs it again
    for disks attached later."""
    return [
        RootFile(f"usr/local/sbin/{DISK_AGENT}", packaged_file(DISK_AGENT), mode=0o755),
        *unit_entries(f"{DISK_AGENT}.service", "multi-user.target"),
        *unit_entries(f"{DISK_AGENT}.timer", "timers.target"),
    ]


BOOT_REPORT = "bakery-boot-report"
#: Where the boot report finds the API's URL (Bakery writes it beside the bake's secret).
API_URL_FILE = "var/lib/bakery/api-url"


def boot_report_entries() -> list[RootEntry]:
    """The boot report script, its service (enabled: it runs once userspace is up) and
    the enabled timer that repeats it as a heartbeat."""
    return [
        RootFile(f"usr/local/sbin/{BOOT_REPORT}", packaged_file(BOOT_REPORT), mode=0o755),
        *unit_entries(f"{BOOT_REPORT}.service", "multi-user.target"),
        *unit_entries(f"{BOOT_REPORT}.timer", "timers.target"),
    ]


#: Where the disk agent reads the disks list unless told otherwise (Settings default).
DEFAULT_DISKS_LIST = "var/lib/bakery/disks"
#: Where the boot report reads the bake's secret unless told otherwise (Settings default).
DEFAULT_SECRET_PATH = "var/lib/bakery/secret"


def install_disk_agent(root: Path, disks_list: str = DEFAULT_DISKS_LIST) -> None:
    """Install the disk agent into the root tree `root` and enable its timer.

    The fleet calls this on every bake, so every Pi picks up the disks Bakery attaches,
    whatever its bakeform. Installing again replaces the files. A disks list elsewhere
    than the default is passed to the service by a drop-in. Symlinked directories in
    the root raise `roots.SeasoningError`.
    """
    entries = disk_agent_entries()
    if disks_list != DEFAULT_DISKS_LIST:
        drop_in = f"[Service]\nEnvironment=BAKERY_DISKS_LIST=/{disks_list}\n".encode()
        entries.append(RootFile(f"{UNIT_DIR}/{DISK_AGENT}.service.d/bakery.conf", drop_in))
    install_entries(root, entries)


def install_entries(root: Path, entries: list[RootEntry]) -> None:
    for entry in entries:
        if isinstance(entry, RootFile):
            roots.write_in_root(
                root, entry.path, entry.data, mode=entry.mode, uid=entry.uid, gid=entry.gid
            )
        else:
            roots.symlink_in_root(root, entry.path, entry.target)


def install_boot_report(root: Path, api_url: str, secret_path: str) -> None:
    """Install the boot report into the root tree `root`, with the API URL it posts to
    and, when the bake's secret is elsewhere than the default, a drop-in naming it."""
    entries = [*boot_report_entries(), RootFile(API_URL_FILE, f"{api_url}\n".encode())]
    if secret_path != DEFAULT_SECRET_PATH:
        drop_in = f"[Service]\nEnvironment=BAKERY_SECRET_FILE=/{secret_path}\n".encode()
        entries.append(RootFile(f"{UNIT_DIR}/{BOOT_REPORT}.service.d/bakery.conf", drop_in))
    install_entries(root, entries)
