"""images.import_image: real SD images built with mtools/mkfs.ext4, imported with the real
tools, read back file by file; bad uploads refused precisely, leaving nothing behind."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from bakery.images import ImageError
from bakery.sim.image import (
    MIB,
    build_sd_image,
    default_boot_files,
)
from tests.images.support import (
    BOOT_OFFSET,
    ROOT_OFFSET,
    assert_only_empty_root,
    compressed,
    describe_tree,
    import_file,
    needs_root_and_tools,
    written,
)
from tests.support.xattrs import XATTR_TOOLS, read_back, xattr_dump


class TestFaithfulImport:
    pytestmark = needs_root_and_tools

    def test_root_tree_matches_the_source_file_by_file(self, image, source_root, staging):
        import_file(image, staging)
        assert describe_tree(staging / "root") == describe_tree(source_root)

    def test_owners_setuid_sticky_and_symlinks_survive(self, image, staging):
        import_file(image, staging)
        root = staging / "root"
        assert stat.S_IMODE((root / "usr/bin/sudo").stat().st_mode) == 0o4755
        assert stat.S_IMODE((root / "tmp").stat().st_mode) == 0o1777
        assert (root / "etc/ssh/ssh_host_ed25519_key").stat().st_gid == 42
        assert os.readlink(root / "etc/localtime") == "/usr/share/zoneinfo/Etc/UTC"
        assert (root / "etc/localtime").lstat().st_uid == 1000
        assert os.readlink(root / "etc/resolv.conf") == "../run/resolvconf/resolv.conf"

    @pytest.mark.tools(*XATTR_TOOLS)
    def test_capabilities_acls_and_xattrs_read_back_as_in_the_source(
        self, image, source_root, staging
    ):
        import_file(image, staging)
        root = staging / "root"

        assert read_back(["getcap", "usr/bin/ping"], root) == "usr/bin/ping cap_net_raw=ep"
        journal_acl = read_back(["getfacl", "var/log/journal"], root)
        assert "group:adm:r-x" in journal_acl and "default:group:adm:r-x" in journal_acl
        assert xattr_dump(root) == xattr_dump(source_root)

    def test_hard_links_stay_one_inode_and_sparse_files_stay_sparse(self, image, staging):
        import_file(image, staging)
        root = staging / "root"
        assert (root / "usr/bin/sudo").stat().st_ino == (root / "usr/bin/sudoedit").stat().st_ino
        swap = (root / "var/swap").stat()
        assert swap.st_size == 16 * MIB
        assert swap.st_blocks * 512 < MIB

    def test_boot_files_are_extracted_exactly(self, image, staging):
        import_file(image, staging)
        boot = staging / "boot"
        extracted = {
            str(p.relative_to(boot)): p.read_bytes() for p in boot.rglob("*") if p.is_file()
        }
        assert extracted == default_boot_files()

    def test_result_reports_hash_sizes_and_cmdline(self, image, staging):
        progress: list[int] = []
        result = import_file(image, staging, progress=progress.append)
        data = image.read_bytes()
        assert result.sha256 == hashlib.sha256(data).hexdigest()
        assert result.size == result.image_size == len(data)
        assert result.compression == "none"
        assert result.cmdline == default_boot_files()["cmdline.txt"].decode().strip()
        assert progress[-1] == len(data) and progress == sorted(progress)
        assert sorted(p.name for p in staging.iterdir()) == ["boot", "root"]

    @pytest.mark.parametrize(
        ("tool", "suffix", "name"), [("xz", ".xz", "xz"), ("gzip", ".gz", "gz")]
    )
    def test_compressed_upload_gives_the_same_tree_and_hashes_the_upload(
        self, image, source_root, staging, tool, suffix, name
    ):
        upload = compressed(image, tool, suffix)
        result = import_file(upload, staging)
        assert result.compression == name
        assert result.sha256 == hashlib.sha256(upload.read_bytes()).hexdigest()
        assert result.size == upload.stat().st_size
        assert result.image_size == image.stat().st_size
        assert describe_tree(staging / "root") == describe_tree(source_root)


def patched(image: Path, tmp_path: Path, offset: int, data: bytes) -> Path:
    target = tmp_path / "bad.img"
    shutil.copyfile(image, target)
    with target.open("r+b") as f:
        f.seek(offset)
        f.write(data)
    return target


def cut(image: Path, tmp_path: Path, size: int) -> Path:
    target = tmp_path / "cut.img"
    with image.open("rb") as source, target.open("wb") as out:
        out.write(source.read(size))
    return target


def tarball() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("etc/hostname")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"pi4\n"))
    return buffer.getvalue()


def cross_linked_fat(tmp_path: Path) -> Path:
    """A boot partition of 64 MiB whose nine small files' entries are patched to share
    the clusters of one 8 MiB file: 80 MiB of files listed in 64 MiB."""
    boot = {"BIG.BIN": os.urandom(8 * MIB), **{f"A{i}.TXT": b"small\n" for i in range(9)}}
    image = build_sd_image(tmp_path / "cross-linked.img", boot=boot)
    data = bytearray(image.read_bytes())
    big = data.find(b"BIG     BIN", BOOT_OFFSET)
    cluster_and_size = (data[big + 20 : big + 22], data[big + 26 : big + 32])
    for i in range(9):
        entry = data.find(f"A{i}      TXT".encode(), BOOT_OFFSET)
        assert entry > 0
        data[entry + 20 : entry + 22], data[entry + 26 : entry + 32] = cluster_and_size
    image.write_bytes(bytes(data))
    return image


def partition_type(number: int) -> int:
    return 446 + 16 * (number - 1) + 4


def boot_sector_of(image: Path) -> bytes:
    with image.open("rb") as f:
        f.seek(BOOT_OFFSET)
        return f.read(4096)


#: case -> (make the upload from the good image in a tmp dir, expected ImageError code)
BAD_UPLOADS: dict[str, tuple[Callable[[Path, Path], Path], str]] = {
    "zero_length": (lambda i, t: written(t, b""), "empty"),
    "text": (lambda i, t: written(t, b"just some text\n" * 100), "not_an_image"),
    "random_bytes": (lambda i, t: written(t, os.urandom(4096)), "not_an_image"),
    "tar_gz": (lambda i, t: written(t, tarball()), "not_an_image"),
    "corrupt_xz": (
        lambda i, t: written(t, b"\xfd7zXZ\x00" + os.urandom(2000)),
        "decompress_failed",
    ),
    "corrupt_gz": (
        lambda i, t: written(t, b"\x1f\x8b\x08\x00" + os.urandom(99)),
        "decompress_failed",
    ),
    "gz_with_trailing_garbage": (
        lambda i, t: written(t, compressed(i, "gzip", ".gz").read_bytes() + os.urandom(512)),
        "decompress_failed",
    ),
    "xz_with_trailing_garbage": (
        lambda i, t: written(t, compressed(i, "xz", ".xz").read_bytes() + os.urandom(512)),
        "decompress_failed",
    ),
    "fat_cross_linked": (lambda i, t: cross_linked_fat(t), "corrupt_boot"),
    "gpt": (lambda i, t: patched(i, t, partition_type(1), b"\xee"), "bad_partition_table"),
    "root_not_linux": (lambda i, t: patched(i, t, partition_type(2), b"\x0c"), "no_ext4_root"),
    "boot_not_fat": (lambda i, t: patched(i, t, partition_type(1), b"\x83"), "no_fat_boot"),
    "fat_boot_sector_flipped": (lambda i, t: patched(i, t, BOOT_OFFSET, b"\0\0\0"), "no_fat_boot"),
    "ext4_magic_flipped": (lambda i, t: patched(i, t, ROOT_OFFSET + 1080, b"\0\0"), "no_ext4_root"),
    "root_is_fat": (lambda i, t: patched(i, t, ROOT_OFFSET, boot_sector_of(i)), "no_ext4_root"),
    "truncated_in_root": (lambda i, t: cut(i, t, ROOT_OFFSET + 32 * MIB), "truncated"),
}


@pytest.mark.parametrize("case", sorted(BAD_UPLOADS))
def test_bad_upload_is_rejected_precisely_and_leaves_nothing_behind(image, staging, tmp_path, case):
    make, expected = BAD_UPLOADS[case]
    with pytest.raises(ImageError) as caught:
        import_file(make(image, tmp_path), staging)
    assert caught.value.code == expected, str(caught.value)
    assert_only_empty_root(staging)
