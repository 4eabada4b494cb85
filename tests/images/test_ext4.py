"""images.ext4 and images.rootwriter: hostile trees and every block map layout ext4 has,
extracted as the kernel would show them."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bakery.images import ImageError
from bakery.sim.image import (
    CAP_NET_RAW,
    JOURNAL_ACL,
    MIB,
    build_sd_image,
)
from tests.images.support import (
    ROOT_OFFSET,
    assert_only_empty_root,
    describe_tree,
    import_file,
    root_and_tools,
)


def duplicate_name_image(tmp_path: Path, outside: Path) -> Path:
    """A root where ``etc`` is a symlink to ``outside`` and a second entry, also named
    ``etc``, is a directory holding ``payload``: a naive rdump would write through it."""
    tree = tmp_path / "hostile"
    (tree / "etX").mkdir(parents=True)
    (tree / "etX/payload").write_text("owned\n")
    (tree / "etc").symlink_to(outside)
    image = tmp_path / "hostile.img"
    build_sd_image(image, root_dir=tree)
    # Rename the directory entry in place (no metadata_csum needed: rebuild without it).
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-O", "^metadata_csum,^dir_index", "-E",
         f"offset={ROOT_OFFSET}", "-d", str(tree), str(image), f"{64 * 1024}k"],
        check=True,
    )  # fmt: skip
    data = bytearray(image.read_bytes())
    entry = data.find(b"\x03\x02etX", ROOT_OFFSET)
    assert entry > 0
    data[entry + 2 : entry + 5] = b"etc"
    image.write_bytes(bytes(data))
    return image


@root_and_tools
def test_duplicate_names_cannot_write_through_a_symlink(tmp_path, staging):
    outside = tmp_path / "outside"
    outside.mkdir()
    with pytest.raises(ImageError) as caught:
        import_file(duplicate_name_image(tmp_path, outside), staging)
    assert caught.value.code == "corrupt_root"
    assert list(outside.iterdir()) == []
    assert_only_empty_root(staging)


@root_and_tools
def test_absolute_symlink_to_a_dir_is_kept_as_a_symlink_and_not_followed(tmp_path, staging):
    outside = tmp_path / "outside"
    outside.mkdir()
    tree = tmp_path / "tree"
    (tree / "real").mkdir(parents=True)
    (tree / "real/file").write_text("inside\n")
    (tree / "etc").symlink_to(outside)
    (tree / "abs").symlink_to("/etc/passwd")
    import_file(build_sd_image(tmp_path / "links.img", root_dir=tree), staging)
    assert os.readlink(staging / "root/etc") == str(outside)
    assert os.readlink(staging / "root/abs") == "/etc/passwd"
    assert list(outside.iterdir()) == []


def root_fs(
    tmp_path: Path, tree: Path, *mkfs_options: str, then: Callable[[Path], None] | None = None
) -> Path:
    """A bare ext4 filesystem file holding ``tree``, made with ``mkfs_options`` and then
    changed by ``then``."""
    part = tmp_path / "root.ext4"
    mkfs = ["mkfs.ext4", "-q", "-F", "-O", "^metadata_csum", *mkfs_options, "-d", str(tree)]
    subprocess.run([*mkfs, str(part), "64M"], check=True, capture_output=True)
    if then is not None:
        then(part)
    return part


def sd_image_around(tmp_path: Path, part: Path) -> Path:
    """An SD image (stock boot partition) whose root partition is the filesystem ``part``."""
    (tmp_path / "empty").mkdir()
    image = build_sd_image(tmp_path / "custom.img", root_dir=tmp_path / "empty")
    with part.open("rb") as source, image.open("r+b") as target:
        target.seek(ROOT_OFFSET)
        shutil.copyfileobj(source, target)
    return image


@contextmanager
def mounted(part: Path, mountpoint: Path) -> Iterator[Path]:
    """The kernel's read-only view of ``part``: the reference for what the import must give."""
    mountpoint.mkdir()
    mount = ["mount", "-t", "ext4", "-o", "loop,ro,noload", str(part), str(mountpoint)]
    subprocess.run(mount, check=True, capture_output=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True, capture_output=True)


def mtimes_ns(top: Path) -> dict[str, int]:
    return {
        str(p.relative_to(top)): p.lstat().st_mtime_ns
        for p in top.rglob("*")
        if "lost+found" not in p.parts
    }


def debugfs_write(*commands: str) -> Callable[[Path], None]:
    def run(part: Path) -> None:
        for command in commands:
            subprocess.run(
                ["debugfs", "-w", "-R", command, str(part)], check=True, capture_output=True
            )

    return run


def upgraded_from_ext3(part: Path) -> None:
    """tune2fs turns ext3 into ext4; the files already there keep their old block maps."""
    subprocess.run(["tune2fs", "-O", "extent", str(part)], check=True, capture_output=True)


EXT3_OPTIONS = ("-b", "1024", "-O", "^extent,^64bit")


def write_at(path: Path, size: int, chunks: dict[int, bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        for offset, data in chunks.items():
            f.seek(offset)
            f.write(data)
        f.truncate(size)


def awkward_files(top: Path) -> Path:
    """Files whose data is laid out in every way an ext4 block map can express, with
    extended attributes in the inode and in a block of their own."""
    write_at(top / "holes", 12 * MIB + 100, {0: b"a" * 5000, 3 * MIB: b"b" * 10_000,
                                             9 * MIB: os.urandom(70_000)})  # fmt: skip
    write_at(top / "large", 20 * MIB + 1, {0: os.urandom(20 * MIB + 1)})
    write_at(top / "tail/odd", 5000, {0: os.urandom(5000)})
    write_at(top / "tail/empty", 0, {})
    write_at(top / "all-hole", 2 * MIB, {})
    write_at(top / "tiny", 3, {0: b"hi\n"})
    (top / "long-link").symlink_to("x" * 100)
    (top / "short-link").symlink_to("tiny")
    os.link(top / "holes", top / "tail/holes-again")
    os.setxattr(top / "tiny", "user.mime_type", b"text/plain")  # beside inline data
    os.setxattr(top / "large", "security.capability", CAP_NET_RAW)
    os.setxattr(top / "holes", "user.big", os.urandom(900))  # too big for the inode
    os.setxattr(top / "tail", "system.posix_acl_default", JOURNAL_ACL)
    os.setxattr(top / "long-link", "trusted.origin", b"\x00\x01", follow_symlinks=False)
    return top


@root_and_tools
@pytest.mark.parametrize(
    "mkfs_options",
    [(), ("-O", "inline_data"), ("-b", "1024"), EXT3_OPTIONS],
    ids=["extents", "inline_data", "1k_blocks", "ext3_block_maps_upgraded"],
)
def test_every_block_map_layout_is_extracted_faithfully(tmp_path, staging, mkfs_options):
    upgrade = upgraded_from_ext3 if mkfs_options == EXT3_OPTIONS else None
    part = root_fs(tmp_path, awkward_files(tmp_path / "source"), *mkfs_options, then=upgrade)
    import_file(sd_image_around(tmp_path, part), staging)
    root = staging / "root"
    with mounted(part, tmp_path / "mnt") as kernel_view:
        assert describe_tree(root) == describe_tree(kernel_view)
    assert (root / "holes").stat().st_ino == (root / "tail/holes-again").stat().st_ino
    for sparse in ("holes", "all-hole"):
        assert (root / sparse).stat().st_blocks * 512 < MIB


@root_and_tools
@pytest.mark.parametrize("name", ["user.two words", "user.\x01ctl", 'user.a"b', "user.back\\slash"])
def test_an_extended_attribute_name_that_cannot_be_carried_is_refused(tmp_path, staging, name):
    """Names debugfs would print escaped or could not take back on its command line."""
    tree = tmp_path / "source"
    write_at(tree / "tiny", 3, {0: b"hi\n"})
    os.setxattr(tree / "tiny", name, b"v")
    part = root_fs(tmp_path, tree)

    with pytest.raises(ImageError) as caught:
        import_file(sd_image_around(tmp_path, part), staging)

    assert caught.value.code == "corrupt_root"
    assert "extended attribute" in str(caught.value)
    assert_only_empty_root(staging)


@root_and_tools
def test_times_are_kept_to_the_nanosecond(tmp_path, staging):
    nanoseconds = f"0x{123456789 << 2:x}"  # the inode's extra time field: ns << 2 | epoch
    stamped = [f"sif /{name} mtime_extra {nanoseconds}" for name in ("tiny", "tail", "short-link")]
    part = root_fs(tmp_path, awkward_files(tmp_path / "source"), then=debugfs_write(*stamped))
    import_file(sd_image_around(tmp_path, part), staging)
    with mounted(part, tmp_path / "mnt") as kernel_view:
        assert mtimes_ns(staging / "root") == mtimes_ns(kernel_view)
    assert (staging / "root/tail").stat().st_mtime_ns % 10**9 == 123456789


@root_and_tools
def test_preallocated_blocks_read_as_zeros_and_are_not_copied(tmp_path, staging):
    """debugfs ``fallocate`` leaves unwritten extents, inside and beyond the file size."""
    source = tmp_path / "source"
    write_at(source / "prealloc", 0, {})
    prealloc = debugfs_write("fallocate /prealloc 0 511", "sif /prealloc size 1048576")
    import_file(sd_image_around(tmp_path, root_fs(tmp_path, source, then=prealloc)), staging)
    extracted = staging / "root/prealloc"
    assert extracted.read_bytes() == bytes(MIB)
    assert extracted.stat().st_blocks == 0


def first_block(part: Path, name: str) -> int:
    result = subprocess.run(
        ["debugfs", "-R", f"bmap /{name} 0", str(part)], check=True, capture_output=True
    )
    return int(result.stdout)


def two_files_image(tmp_path: Path, first_block_of_b: Callable[[Path], int]) -> Path:
    """Files ``a`` and ``b`` in old-style block maps, ``b``'s first block pointer rewritten."""
    source = tmp_path / "source"
    write_at(source / "a", 8192, {0: os.urandom(8192)})
    write_at(source / "b", 8192, {0: os.urandom(8192)})

    def rewrite(part: Path) -> None:
        upgraded_from_ext3(part)
        debugfs_write(f"sif /b block[0] {first_block_of_b(part)}")(part)

    return sd_image_around(tmp_path, root_fs(tmp_path, source, *EXT3_OPTIONS, then=rewrite))


@root_and_tools
@pytest.mark.parametrize(
    ("first_block_of_b", "message"),
    [
        (lambda part: first_block(part, "a"), "share block"),
        (lambda part: 10**8, "outside the filesystem"),
    ],
    ids=["shared_with_a", "beyond_the_end"],
)
def test_block_maps_pointing_elsewhere_are_refused(tmp_path, staging, first_block_of_b, message):
    """Shared blocks would let a small image expand into a huge tree."""
    with pytest.raises(ImageError, match=message) as caught:
        import_file(two_files_image(tmp_path, first_block_of_b), staging)
    assert caught.value.code == "corrupt_root"
    assert_only_empty_root(staging)


@root_and_tools
@pytest.mark.parametrize(
    ("limit", "value", "said"),
    [("MAX_ROOT_ENTRIES", 10, "more than 10 files"), ("MAX_ROOT_PATH", 12, "longer than 12")],
)
def test_a_root_past_a_limit_is_refused_before_anything_is_written(
    sd_image, staging, monkeypatch, limit, value, said
):
    monkeypatch.setattr(f"bakery.images.ext4.{limit}", value)
    with pytest.raises(ImageError, match=said) as caught:
        import_file(sd_image, staging)
    assert caught.value.code == "root_too_large"
    assert_only_empty_root(staging)
