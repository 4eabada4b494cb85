"""Fixtures of the root tests: scratch directories on real btrfs, xfs and ext4 loop
filesystems, a Pi-like base and its seasoned clones, a boot partition, and a stand-in host
tree."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.roots.support import FS_SIZE_MIB, make_pi_root
from tests.support.loopfs import loop_filesystem, missing_tools


@pytest.fixture(scope="module")
def scratch_on() -> Iterator[Callable[[str], Path]]:
    """``scratch_on("xfs")`` is a fresh empty directory on a real xfs filesystem.

    One loop filesystem per type is made on first use and shared by the module's tests
    (each in its own directory), then unmounted and detached at the end.
    """
    with ExitStack() as stack:
        mounts: dict[str, Path] = {}

        def scratch(fstype: str) -> Path:
            missing = missing_tools(fstype)
            if missing:
                pytest.skip(f"{fstype} needs {', '.join(missing)}")
            if fstype not in mounts:
                mounts[fstype] = stack.enter_context(loop_filesystem(fstype, FS_SIZE_MIB[fstype]))
            return Path(tempfile.mkdtemp(dir=mounts[fstype]))

        yield scratch


@pytest.fixture
def pi_base(tmp_path) -> Path:
    base = tmp_path / "base"
    make_pi_root(base)
    return base


@pytest.fixture
def host(tmp_path) -> Path:
    """A stand-in for the host's /etc, next to the root, that seasoning must not touch."""
    decoy = tmp_path / "host-etc"
    decoy.mkdir()
    for name in ("hostname", "hosts", "shadow", "passwd", "machine-id", "fstab"):
        (decoy / name).write_text(f"host {name}: secret\n")
    (decoy / "ssh").mkdir()
    (decoy / "ssh/ssh_host_ed25519_key").write_text("host private key\n")
    return decoy
