"""roots.clone: snapshots on btrfs, reflinks on xfs, boot files linked or copied, and clones
that are whole or absent."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from bakery.roots import (
    clone_boot,
    clone_method_for,
    clone_root,
    create_base,
    delete_tree,
)
from tests.roots.support import MIB, boot_partition, file_digests, make_pi_root, subvolume_field
from tests.support.loopfs import loop_filesystem


@pytest.mark.root
def test_base_on_btrfs_is_a_subvolume_so_bakes_are_snapshots(scratch_on):
    base = scratch_on("btrfs") / "bakeforms/raspios/root"

    assert create_base(base) == "snapshot"

    assert subvolume_field(base, "UUID")
    assert list(base.iterdir()) == []


@pytest.mark.root
def test_clone_on_btrfs_is_a_writable_snapshot_of_the_base(scratch_on):
    scratch = scratch_on("btrfs")
    base, clone = scratch / "base", scratch / "clone"
    create_base(base)
    make_pi_root(base)

    clone_root(base, clone, "snapshot")
    (clone / "etc/hostname").write_text("pi-01\n")
    (clone / "etc/new").write_text("only in the bake")

    assert subvolume_field(clone, "Parent UUID") == subvolume_field(base, "UUID")
    assert (base / "etc/hostname").read_text() == "raspberrypi\n"
    assert not (base / "etc/new").exists()


@pytest.mark.root
def test_delete_tree_removes_a_snapshot_holding_a_nested_subvolume(scratch_on):
    scratch = scratch_on("btrfs")
    base, clone = scratch / "base", scratch / "clone"
    create_base(base)
    make_pi_root(base)
    clone_root(base, clone, "snapshot")
    subprocess.run(["btrfs", "subvolume", "create", str(clone / "var/lib/machines")], check=True)

    delete_tree(clone)

    assert not clone.exists()
    assert (base / "etc/hostname").exists()


@pytest.mark.root
def test_plain_directory_on_btrfs_is_cloned_by_reflink(scratch_on):
    plain = scratch_on("btrfs") / "plain"
    plain.mkdir()

    assert clone_method_for(plain) == "reflink"


@pytest.mark.root
def test_clone_on_xfs_shares_extents_with_the_base(scratch_on):
    scratch = scratch_on("xfs")
    base, clone = scratch / "base", scratch / "clone"
    assert create_base(base) == "reflink"
    with open(base / "big.bin", "wb") as big:
        for _ in range(200):
            big.write(os.urandom(MIB))
    os.sync()
    free_before = shutil.disk_usage(scratch).free

    clone_root(base, clone, "reflink")
    os.sync()

    assert free_before - shutil.disk_usage(scratch).free < 10 * MIB
    extents = subprocess.run(
        ["filefrag", "-v", str(clone / "big.bin")], check=True, capture_output=True, text=True
    ).stdout
    assert "shared" in extents
    assert file_digests(clone) == {
        path.replace(str(base), str(clone)): digest for path, digest in file_digests(base).items()
    }


@pytest.mark.root
def test_failed_clone_leaves_nothing_behind(scratch_on):
    scratch = scratch_on("tmpfs")
    base = scratch / "base"
    create_base(base)
    (base / "big.bin").write_bytes(os.urandom(8 * MIB))
    with loop_filesystem("tmpfs", 4) as too_small:
        dest = too_small / "clone"

        with pytest.raises(RuntimeError, match="No space left"):
            clone_root(base, dest, "copy")

        assert list(too_small.iterdir()) == []


def test_boot_files_are_linked_where_the_bakeform_is_on_the_same_filesystem(tmp_path):
    source = boot_partition(tmp_path / "bakeform" / "boot")
    (tmp_path / "bake").mkdir()
    clone_boot(source, tmp_path / "bake" / "boot")
    assert (tmp_path / "bake" / "boot" / "kernel8.img").samefile(source / "kernel8.img")
    assert (tmp_path / "bake" / "boot" / "overlays" / "vc4.dtbo").samefile(
        source / "overlays" / "vc4.dtbo"
    )


def test_boot_files_never_land_on_an_existing_destination(tmp_path):
    source = boot_partition(tmp_path / "bakeform" / "boot")
    taken = tmp_path / "bake" / "boot"
    taken.mkdir(parents=True)
    (taken / "kernel8.img").write_bytes(b"someone else's")
    with pytest.raises(FileExistsError):
        clone_boot(source, taken)
    assert (taken / "kernel8.img").read_bytes() == b"someone else's"


@pytest.mark.root
def test_boot_files_are_copied_where_links_cannot_reach(tmp_path):
    source = boot_partition(tmp_path / "bakeform" / "boot")
    with loop_filesystem("tmpfs", 4) as elsewhere:
        clone_boot(source, elsewhere / "boot")
        copied = elsewhere / "boot" / "kernel8.img"
        assert copied.read_bytes() == (source / "kernel8.img").read_bytes()
        assert not copied.samefile(source / "kernel8.img")
        assert (elsewhere / "boot" / "overlays" / "vc4.dtbo").read_bytes() == b"overlay"


@pytest.mark.root
def test_clone_into_a_missing_directory_fails_and_leaves_nothing(tmp_path):
    base = tmp_path / "base"
    create_base(base)
    dest = tmp_path / "no-such-bake" / "root"

    with pytest.raises(RuntimeError):
        clone_root(base, dest, "copy")

    assert not dest.parent.exists()


def test_clone_never_overwrites_an_existing_root(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "clone").mkdir()

    with pytest.raises(FileExistsError):
        clone_root(tmp_path / "base", tmp_path / "clone", "copy")


def test_delete_tree_does_not_follow_symlinks_out_of_the_root(tmp_path):
    outside = tmp_path / "host"
    outside.mkdir()
    (outside / "precious").write_text("keep me")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/link-to-host").symlink_to(outside)
    (root / "host-file").symlink_to(outside / "precious")

    delete_tree(root)

    assert not root.exists()
    assert (outside / "precious").read_text() == "keep me"


def test_deleting_a_missing_root_is_fine(tmp_path):
    delete_tree(tmp_path / "gone")
    delete_tree(tmp_path / "gone")
