"""Sparse disk images, one directory per disk so each can be its own NFS export.

A disk is made in a hidden staging directory and renamed into place, so a crash
never leaves a half-made disk where the listing or the exports would see it.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from . import fsutil, identifiers
from .config import Settings

DISK_FILE = "disk.img"


def disks_dir(settings: Settings) -> Path:
    return settings.path("disks")


def disk_dir(settings: Settings, disk_id: str) -> Path:
    return disks_dir(settings) / identifiers.object_id(disk_id, "disk id")


def create_disk_image(settings: Settings, disk_id: str, size_mib: int) -> Path:
    """Create ``disks/<id>/disk.img`` of ``size_mib`` MiB taking no space until written."""
    final = disk_dir(settings, disk_id)
    staging = disks_dir(settings) / fsutil.staging_name()
    staging.mkdir(parents=True)
    try:
        with open(staging / DISK_FILE, "xb") as image:
            image.truncate(size_mib * 1024 * 1024)
        os.rename(staging, final)
    except BaseException:
        fsutil.remove(staging)
        raise
    return final / DISK_FILE


def resize_disk_image(settings: Settings, disk_id: str, size_mib: int) -> None:
    """Grow a disk image in place (sparse); shrinking is the caller's to refuse."""
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
