"""Disk images on a reflink filesystem: snapshots share extents with their disk."""

from __future__ import annotations

import os

import pytest

from bakery import disks
from bakery.config import load_settings
from tests.support.loopfs import fs_tools, loop_filesystem

pytestmark = [
    pytest.mark.root,
    pytest.mark.tools(*fs_tools("xfs")),
]


@pytest.fixture
def xfs_settings(tmp_path):
    with loop_filesystem("xfs", 300, tmp_path) as mount:
        yield load_settings(environ={}, root=mount / "data")


def test_a_snapshot_is_a_reflink_copy_of_the_disk(xfs_settings):
    image = disks.create_disk_image(xfs_settings, "a" * 32, 256)
    with open(image, "r+b") as disk:
        disk.write(os.urandom(64 << 20))
    before = os.statvfs(image).f_bfree
    assert disks.snapshot_disk_image(xfs_settings, "a" * 32, "b" * 32)
    copy = disks.snapshot_dir(xfs_settings, "b" * 32) / "disk.img"
    assert copy.read_bytes() == image.read_bytes()
    used = (before - os.statvfs(image).f_bfree) * os.statvfs(image).f_frsize
    assert used < 8 << 20, "a snapshot must share the disk's extents, not copy them"
    with open(image, "r+b") as disk:
        disk.write(b"changed")
    assert copy.read_bytes()[:7] != b"changed"


def test_growing_a_disk_keeps_its_data(xfs_settings):
    image = disks.create_disk_image(xfs_settings, "c" * 32, 16)
    image.write_bytes(b"data" + bytes((16 << 20) - 4))
    disks.resize_disk_image(xfs_settings, "c" * 32, 128)
    assert image.stat().st_size == 128 << 20
    assert image.read_bytes()[:4] == b"data"
