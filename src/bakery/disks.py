"""Sparse disk images, one directory per disk so each can be its own NFS export.

A disk is made in a hidden staging directory and renamed into place, so a crash
never leaves a half-made disk where the listing or the exports would see it.

A disk may be formatted here, in user space, when it is made: the disk agent then mounts
it on the Pi as a local filesystem on a loop device. That is what containerd and k3s need,
since overlayfs refuses an NFS directory as its upper layer. Formatting a sparse file
with a lazily made journal writes a few MiB, whatever the disk's size.

A disk for BOSH is made partitioned instead: an MBR with one Linux partition spanning the
disk, as the bosh-agent partitions a persistent disk, left for the agent to format. So
the partition exists (and the disk agent has made its device node) before the agent
first looks for it; the agent writes the same table again at each mount, which the
disk agent's anchors make harmless (see bakery-disk-agent).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from . import fsutil, identifiers
from .config import Settings

DISK_FILE = "disk.img"
#: The filesystems Bakery can make on a disk. ext4 is the one every Pi kernel mounts and
#: the one containerd's overlayfs snapshotter is tested on.
FILESYSTEMS = ("ext4",)
#: The partition table of a disk made for BOSH, as sfdisk reads it: DOS (MBR), one Linux
#: partition from 1 MiB to the end, the layout the bosh-agent makes with `,,L`.
PARTITION_TABLE = "label: dos\nstart=2048, type=83\n"
#: The largest disk an MBR partition spans whole (2^32 sectors of 512 bytes).
MAX_PARTITIONED_MIB = 2 * 1024 * 1024


def disks_dir(settings: Settings) -> Path:
    return settings.path("disks")


def disk_dir(settings: Settings, disk_id: str) -> Path:
    return disks_dir(settings) / identifiers.object_id(disk_id, "disk id")


def create_disk_image(
    settings: Settings,
    disk_id: str,
    size_mib: int,
    filesystem: str | None = None,
    *,
    partitioned: bool = False,
) -> Path:
    """Create ``disks/<id>/disk.img`` of ``size_mib`` MiB taking no space until written,
    formatted with ``filesystem`` (one of FILESYSTEMS) if given, or given the partition
    table of a BOSH disk if `partitioned`."""
    final = disk_dir(settings, disk_id)
    staging = disks_dir(settings) / fsutil.staging_name()
    staging.mkdir(parents=True)
    try:
        with open(staging / DISK_FILE, "xb") as image:
            image.truncate(size_mib * 1024 * 1024)
        if filesystem:
            format_disk_image(staging / DISK_FILE, disk_id, filesystem)
        if partitioned:
            partition_disk_image(staging / DISK_FILE)
        os.rename(staging, final)
    except BaseException:
        fsutil.remove(staging)
        raise
    return final / DISK_FILE


def format_disk_image(image: Path, disk_id: str, filesystem: str) -> None:
    """Make ``filesystem`` on the image file, its UUID the disk's id (so the Pi also finds
    it under /dev/disk/by-uuid) and its top directory root's.

    The file is all holes, so the journal need not be zeroed (``lazy_journal_init``) and
    mke2fs knows the inode tables read as zeroes: nothing is left for the Pi's kernel to
    initialise over NFS after the first mount."""
    if filesystem not in FILESYSTEMS:
        raise ValueError(f"cannot make a {filesystem!r} filesystem")
    uuid = "-".join((disk_id[:8], disk_id[8:12], disk_id[12:16], disk_id[16:20], disk_id[20:]))
    options = "root_owner=0:0,lazy_journal_init=1"
    fsutil.run(["mkfs.ext4", "-q", "-F", "-U", uuid, "-E", options, str(image)])


def partition_disk_image(image: Path) -> None:
    """Write ``PARTITION_TABLE`` into the image file (sfdisk on a file: no device, no root)."""
    fsutil.run(
        ["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(image)],
        input=PARTITION_TABLE.encode(),
    )


def resize_disk_image(settings: Settings, disk_id: str, size_mib: int) -> None:
    """Grow a disk image in place (sparse); shrinking is the caller's to refuse.

    A filesystem Bakery made on it is grown by the disk agent on the Pi, online, once it
    has it mounted: the server never parses a filesystem a Pi has written."""
    with open(disk_dir(settings, disk_id) / DISK_FILE, "r+b") as image:
        image.truncate(size_mib * 1024 * 1024)


def delete_disk_image(settings: Settings, disk_id: str) -> None:
    fsutil.remove(disk_dir(settings, disk_id))


def snapshot_dir(settings: Settings, snapshot_id: str) -> Path:
    return settings.path("snapshots", identifiers.object_id(snapshot_id, "snapshot id"))


def snapshot_disk_image(settings: Settings, disk_id: str, snapshot_id: str) -> bool:
    """Reflink-copy a disk image into ``snapshots/<id>/``; False where the filesystem
    cannot share extents (a full copy would be a slow, surprising "snapshot")."""
    final = snapshot_dir(settings, snapshot_id)
    staging = final.with_name(fsutil.staging_name())
    staging.mkdir(parents=True)
    try:
        with open(disk_dir(settings, disk_id) / DISK_FILE, "rb") as source:
            with open(staging / DISK_FILE, "xb") as copy:
                fsutil.reflink(source.fileno(), copy.fileno())
        os.rename(staging, final)
    except OSError as exc:
        fsutil.remove(staging)
        if exc.errno in (errno.EOPNOTSUPP, errno.EXDEV, errno.EINVAL, errno.ENOTTY):
            return False
        raise
    return True


def delete_snapshot_image(settings: Settings, snapshot_id: str) -> None:
    fsutil.remove(snapshot_dir(settings, snapshot_id))
