"""What the image tests share: the tools they need, where the test image's partitions are,
importing and describing trees."""

from __future__ import annotations

import hashlib
import os
import stat
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from bakery.images import import_image
from bakery.sim.image import (
    FIRST_SECTOR,
    MIB,
    REQUIRED_TOOLS,
    SECTOR,
)

TOOLS = (*REQUIRED_TOOLS, "debugfs", "mdir", "xz", "gzip", "fallocate")


BOOT_OFFSET = FIRST_SECTOR * SECTOR


ROOT_OFFSET = BOOT_OFFSET + 64 * MIB


#: Extraction restores owners: it needs root.
needs_root_and_tools = [pytest.mark.root, pytest.mark.tools(*TOOLS)]


def root_and_tools(test: Callable) -> Callable:
    for mark in reversed(needs_root_and_tools):
        test = mark(test)
    return test


def mbr(*entries: tuple[int, int, int], signature: bytes = b"\x55\xaa") -> bytes:
    """A first sector with (type, start, sectors) entries."""
    sector = bytearray(SECTOR)
    for index, (kind, start, count) in enumerate(entries):
        struct.pack_into("<B3xB3xII", sector, 446 + 16 * index, 0, kind, start, count)
    sector[510:512] = signature
    return bytes(sector)


def import_file(path: Path, staging: Path, **options: object):
    with path.open("rb") as stream:
        return import_image(stream, staging, **options)


def compressed(image: Path, tool: str, suffix: str) -> Path:
    target = image.with_name(image.name + suffix)
    if not target.exists():
        with target.open("wb") as out:
            subprocess.run([tool, "-c", "-1", str(image)], stdout=out, check=True)
    return target


def describe_tree(top: Path) -> dict[str, tuple]:
    """Everything a Pi would notice about a tree (extended attributes included), keyed by
    relative path."""
    tree = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            relative = str(path.relative_to(top))
            if relative == "lost+found":
                continue
            info = path.lstat()
            kind = stat.S_IFMT(info.st_mode)
            detail: object = None
            if stat.S_ISREG(info.st_mode):
                detail = (hashlib.sha256(path.read_bytes()).hexdigest(), info.st_mtime_ns // 10**9)
            elif stat.S_ISLNK(info.st_mode):
                detail = os.readlink(path)
            elif stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode):
                detail = info.st_rdev
            mode = stat.S_IMODE(info.st_mode)
            tree[relative] = (kind, mode, info.st_uid, info.st_gid, detail, xattrs_of(path))
    return tree


def xattrs_of(path: Path) -> dict[str, bytes]:
    """Every extended attribute of ``path`` itself (not a symlink's target)."""
    return {
        name: os.getxattr(path, name, follow_symlinks=False)
        for name in sorted(os.listxattr(path, follow_symlinks=False))
    }


def assert_no_children_left():
    children = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split()
    assert children == []


def assert_only_empty_root(staging: Path):
    assert [p.name for p in staging.iterdir()] == ["root"]
    assert list((staging / "root").iterdir()) == []
    assert_no_children_left()


def written(tmp_path: Path, data: bytes) -> Path:
    target = tmp_path / "upload"
    target.write_bytes(data)
    return target
