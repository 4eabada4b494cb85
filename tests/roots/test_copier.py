"""roots.copier: the parallel copy where nothing can be shared, as faithful as cp -a."""

from __future__ import annotations

import os
import stat

import pytest

from bakery.roots import (
    clone_root,
    create_base,
)
from tests.roots.support import (
    ACL_WITH_NAMED_USER,
    ATIME_NS,
    CAP_NET_RAW,
    MIB,
    MTIME_NS,
    file_digests,
    make_awkward_tree,
    make_exotic_tree,
    tree_listing,
)


@pytest.mark.root
@pytest.mark.parametrize("fstype", ["ext4", "tmpfs"])
def test_copy_clone_is_faithful(scratch_on, fstype):
    scratch = scratch_on(fstype)
    base, clone = scratch / "base", scratch / "clone"
    assert create_base(base) == "copy"
    make_awkward_tree(base)

    clone_root(base, clone, "copy")

    for relpath in ("usr/bin/sudo", "home/pi", "home/pi/notes", "tmp", "usr/bin/dash"):
        original, copied = os.lstat(base / relpath), os.lstat(clone / relpath)
        assert (copied.st_mode, copied.st_uid, copied.st_gid) == (
            original.st_mode,
            original.st_uid,
            original.st_gid,
        ), relpath
    assert os.readlink(clone / "usr/bin/sh") == "/usr/bin/dash"
    assert os.readlink(clone / "bin") == "usr/bin"
    assert os.stat(clone / "usr/bin/rbash").st_ino == os.stat(clone / "usr/bin/dash").st_ino
    sparse = os.stat(clone / "var.img")
    assert sparse.st_size == 32 * MIB + 3
    assert sparse.st_blocks * 512 < MIB
    assert os.getxattr(clone / "usr/bin/dash", "user.bakery") == b"kept"
    assert stat.S_ISFIFO(os.lstat(clone / "tmp/fifo").st_mode)


@pytest.mark.root
@pytest.mark.parametrize("fstype", ["ext4", "tmpfs"])
def test_copy_clone_keeps_every_entry_of_a_whole_os_root(scratch_on, fstype):
    scratch = scratch_on(fstype)
    base, clone = scratch / "base", scratch / "clone"
    create_base(base)
    make_awkward_tree(base)
    make_exotic_tree(base)
    listing = tree_listing(base)

    clone_root(base, clone, "copy")

    assert tree_listing(clone) == listing
    assert os.lstat(clone / "dev/null").st_rdev == os.makedev(1, 3)
    assert os.lstat(clone / "usr/sbin/crontab").st_ino == os.lstat(clone / "usr/bin/crontab").st_ino
    assert os.getxattr(clone / "usr/bin/ping", "security.capability") == CAP_NET_RAW
    assert stat.S_IMODE(os.lstat(clone / "usr/bin/crontab").st_mode) == 0o2755


@pytest.mark.root
def test_copy_clone_keeps_nanosecond_times_of_every_kind_of_entry(scratch_on):
    scratch = scratch_on("ext4")
    base, clone = scratch / "base", scratch / "clone"
    create_base(base)
    make_exotic_tree(base)

    clone_root(base, clone, "copy")

    for relpath in ("usr/bin/ping", "usr/bin", "dev/null", "usr/bin/python3", "."):
        copied = os.lstat(clone / relpath)
        assert (copied.st_atime_ns, copied.st_mtime_ns) == (ATIME_NS, MTIME_NS), relpath


@pytest.mark.root
def test_copy_clone_keeps_holes_in_the_middle_of_a_file(scratch_on):
    scratch = scratch_on("ext4")
    base, clone = scratch / "base", scratch / "clone"
    create_base(base)
    make_exotic_tree(base)

    clone_root(base, clone, "copy")

    copied = os.stat(clone / "usr/holes.img")
    assert copied.st_size == 40 * MIB
    assert copied.st_blocks * 512 <= os.stat(base / "usr/holes.img").st_blocks * 512 < MIB
    assert file_digests(clone / "usr") == {
        path.replace(str(base), str(clone)): digest
        for path, digest in file_digests(base / "usr").items()
    }


@pytest.mark.root
def test_copy_clone_has_the_base_acls_not_those_of_the_bakes_directory(scratch_on):
    scratch = scratch_on("ext4")
    bakes = scratch / "bakes"
    bakes.mkdir()
    base = scratch / "base"
    create_base(base)
    make_exotic_tree(base)
    os.setxattr(bakes, "system.posix_acl_default", ACL_WITH_NAMED_USER)

    clone_root(base, bakes / "clone", "copy")

    assert tree_listing(bakes / "clone") == tree_listing(base)


@pytest.mark.root
def test_copy_clone_copies_a_symlink_out_of_the_tree_as_a_symlink_and_leaves_its_target(
    scratch_on,
):
    scratch = scratch_on("ext4")
    host = scratch / "host"
    host.mkdir(mode=0o700)
    (host / "shadow").write_text("secret")
    host_listing = tree_listing(host)
    base, clone = scratch / "base", scratch / "clone"
    create_base(base)
    (base / "etc").symlink_to(host)
    (base / "shadow").symlink_to(host / "shadow")
    for link in (base / "etc", base / "shadow"):
        os.lchown(link, 1000, 1000)
        os.utime(link, ns=(ATIME_NS, MTIME_NS), follow_symlinks=False)

    clone_root(base, clone, "copy")

    assert sorted(path.name for path in clone.iterdir()) == ["etc", "shadow"]
    assert os.readlink(clone / "etc") == str(host)
    assert tree_listing(clone) == tree_listing(base)
    assert tree_listing(host) == host_listing
