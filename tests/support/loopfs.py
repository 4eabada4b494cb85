"""Real, throw-away filesystems for tests and benchmarks.

Clone behaviour depends on the filesystem (btrfs snapshots, xfs reflinks, ext4 copies), so
tests need the real kernel filesystems rather than a directory that pretends. Each one
lives in a sparse image file on a loop device and is torn down (unmounted, detached,
deleted) however the block inside it ends.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Literal

FsType = Literal["btrfs", "xfs", "ext4", "tmpfs"]

#: mkfs command per filesystem; xfs gets reflink explicitly (older mkfs defaults differ).
MKFS = {
    "btrfs": ["mkfs.btrfs", "-q", "-f"],
    "xfs": ["mkfs.xfs", "-q", "-f", "-m", "reflink=1"],
    "ext4": ["mkfs.ext4", "-q", "-F"],
}

#: Smallest image each mkfs accepts (xfsprogs >= 5.19 refuses below 300 MB).
MIN_SIZE_MIB = {"btrfs": 256, "xfs": 320, "ext4": 16, "tmpfs": 1}


def fs_tools(fstype: FsType) -> tuple[str, ...]:
    """The programs a loop filesystem of `fstype` needs (for ``pytest.mark.tools``)."""
    return ("mount", "umount", *([] if fstype == "tmpfs" else ["losetup", MKFS[fstype][0]]))


def missing_tools(fstype: FsType) -> list[str]:
    """The programs this machine lacks to make `fstype`; empty when it can."""
    return [tool for tool in fs_tools(fstype) if shutil.which(tool) is None]


def _run(args: list[str]) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()


@contextmanager
def loop_filesystem(
    fstype: FsType, size_mib: int = 512, workdir: Path | None = None
) -> Iterator[Path]:
    """Yield the mount point of a fresh `fstype` filesystem of `size_mib` MiB.

    The image file and the mount point live in a temporary directory under `workdir`
    (the system temp dir by default); everything is removed on exit, also on error.
    """
    size_mib = max(size_mib, MIN_SIZE_MIB[fstype])
    with ExitStack() as cleanup:
        tmp = Path(tempfile.mkdtemp(prefix=f"loopfs-{fstype}-", dir=workdir))
        cleanup.callback(shutil.rmtree, tmp, ignore_errors=True)
        mountpoint = tmp / "mnt"
        mountpoint.mkdir()
        if fstype == "tmpfs":
            _run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(mountpoint)])
        else:
            device = _attach_image(tmp / "fs.img", fstype, size_mib)
            cleanup.callback(_run, ["losetup", "--detach", device])
            _run(["mount", device, str(mountpoint)])
        cleanup.callback(_unmount, mountpoint)
        yield mountpoint


def _attach_image(image: Path, fstype: FsType, size_mib: int) -> str:
    """Make the filesystem in a sparse image and attach it; returns the loop device."""
    with open(image, "wb") as sparse:
        sparse.truncate(size_mib * 1024 * 1024)
    _run([*MKFS[fstype], str(image)])
    return _run(["losetup", "--find", "--show", str(image)])


def _unmount(mountpoint: Path) -> None:
    """Unmount, falling back to a lazy unmount if a straggler still holds a file open,
    so the loop device can always be detached."""
    os.sync()
    try:
        _run(["umount", str(mountpoint)])
    except subprocess.CalledProcessError:
        _run(["umount", "--lazy", str(mountpoint)])
