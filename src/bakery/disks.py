"""Sparse disk images, one directory per disk so each can be its own NFS export.

A disk is made in a hidden staging directory and renamed into place, so a crash
never leaves a half-made disk where the listing or the exports would see it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from . import identifiers
from .config import Settings

DISK_FILE = "disk.img"
STAGING_PREFIX = ".incoming-"


def disks_dir(settings: Settings) -> Path:
    return settings.path("disks")


def disk_dir(settings: Settings, disk_id: str) -> Path:
    return disks_dir(settings) / identifiers.object_id(disk_id, "disk id")


def create_disk_image(settings: Settings, disk_id: str, size_mib: int) -> Path:
    """Create ``disks/<id>/disk.img`` of ``size_mib`` MiB taking no space until written."""
    final = disk_dir(settings, disk_id)
    staging = disks_dir(settings) / f"{STAGING_PREFIX}{disk_id}"
    staging.mkdir(parents=True)
    try:
        with open(staging / DISK_FILE, "xb") as image:
            image.truncate(size_mib * 1024 * 1024)
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final / DISK_FILE


def resize_disk_image(settings: Settings, disk_id: str, size_mib: int) -> None:
    """Grow a disk image in place (sparse); shrinking is the caller's to refuse."""
    with open(disk_dir(settings, disk_id) / DISK_FILE, "r+b") as image:
        image.truncate(size_mib * 1024 * 1024)


def delete_disk_image(settings: Settings, disk_id: str) -> None:
    shutil.rmtree(disk_dir(settings, disk_id), ignore_errors=True)


def stray_disk_dirs(settings: Settings, known_ids: set[str]) -> list[Path]:
    """Directories under ``disks/`` that no disk row owns (left by a crash)."""
    base = disks_dir(settings)
    if not base.is_dir():
        return []
    return [p for p in base.iterdir() if p.name not in known_ids]
