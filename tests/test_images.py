"""Bakeform import: real SD images built with mtools/mkfs.ext4, imported with the real tools."""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import os
import shutil
import stat
import struct
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bakery.images import ImageError, UploadTooLarge, import_image
from bakery.images.layout import Partition, choose_partitions, parse_mbr
from bakery.images.receive import SparseWriter, detect_compression
from tests.support.sdimage import (
    FIRST_SECTOR,
    MIB,
    REQUIRED_TOOLS,
    SECTOR,
    build_sd_image,
    default_boot_files,
    populate_root,
)

TOOLS = (*REQUIRED_TOOLS, "debugfs", "mdir", "xz", "gzip", "fallocate")
BOOT_OFFSET = FIRST_SECTOR * SECTOR
ROOT_OFFSET = BOOT_OFFSET + 64 * MIB

needs_root_and_tools = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="extraction restores owners: needs root"),
    pytest.mark.skipif(
        any(shutil.which(t) is None for t in TOOLS), reason=f"needs all of {', '.join(TOOLS)}"
    ),
]


def root_and_tools(test: Callable) -> Callable:
    for mark in reversed(needs_root_and_tools):
        test = mark(test)
    return test


# ---------------------------------------------------------------- pure checks


def mbr(*entries: tuple[int, int, int], signature: bytes = b"\x55\xaa") -> bytes:
    """A first sector with (type, start, sectors) entries."""
    sector = bytearray(SECTOR)
    for index, (kind, start, count) in enumerate(entries):
        struct.pack_into("<B3xB3xII", sector, 446 + 16 * index, 0, kind, start, count)
    sector[510:512] = signature
    return bytes(sector)


def code_of(call: Callable[[], object]) -> str:
    with pytest.raises(ImageError) as caught:
        call()
    return caught.value.code


def test_mbr_of_a_pi_image_lists_fat_boot_and_linux_root():
    partitions = parse_mbr(mbr((0x0C, 2048, 131072), (0x83, 133120, 131072)))
    assert partitions == [Partition(1, 0x0C, 2048, 131072), Partition(2, 0x83, 133120, 131072)]
    layout = choose_partitions(partitions, image_size=(133120 + 131072) * SECTOR)
    assert (layout.boot.number, layout.root.number) == (1, 2)


def test_sector_without_mbr_signature_is_not_an_image():
    with pytest.raises(ImageError, match="no MBR signature 55aa at byte 510") as caught:
        parse_mbr(b"hello world\n" * 100)
    assert caught.value.code == "not_an_image"


def test_input_shorter_than_a_sector_is_not_an_image():
    assert code_of(lambda: parse_mbr(b"\x55\xaa")) == "not_an_image"


def test_gpt_protective_mbr_is_refused_by_name():
    with pytest.raises(ImageError, match="GPT") as caught:
        parse_mbr(mbr((0xEE, 1, 0xFFFFFFFF)))
    assert caught.value.code == "bad_partition_table"


def test_empty_partition_table_is_a_bad_partition_table():
    assert code_of(lambda: parse_mbr(mbr())) == "bad_partition_table"


def test_image_without_fat_partition_says_what_it_found():
    partitions = parse_mbr(mbr((0x83, 2048, 100), (0x83, 4096, 100)))
    with pytest.raises(ImageError, match=r"partition 1 \(type 0x83\)") as caught:
        choose_partitions(partitions, image_size=10 * MIB)
    assert caught.value.code == "no_fat_boot"


def test_image_without_linux_partition_has_no_ext4_root():
    partitions = parse_mbr(mbr((0x0C, 2048, 100), (0x07, 4096, 100)))
    assert code_of(lambda: choose_partitions(partitions, 10 * MIB)) == "no_ext4_root"


def test_partition_beyond_the_end_of_the_image_means_truncated():
    partitions = parse_mbr(mbr((0x0C, 2048, 2048), (0x83, 4096, 4096)))
    with pytest.raises(ImageError, match="partition 2 .* ends at byte 4194304") as caught:
        choose_partitions(partitions, image_size=3 * MIB)
    assert caught.value.code == "truncated"


def test_compression_is_detected_from_magic_bytes():
    assert detect_compression(b"\xfd7zXZ\x00\x00") == "xz"
    assert detect_compression(gzip.compress(b"x")) == "gz"
    assert detect_compression(mbr((0x0C, 2048, 1))) == "none"


def test_scratch_copy_keeps_every_byte_and_leaves_holes_where_the_upload_is_zeros(tmp_path):
    block = SparseWriter.BLOCK
    data = b"\x01" * 100 + bytes(6 * block) + b"\x02" * block + bytes(block + 512) + b"\x03"
    scratch = tmp_path / "scratch.img"
    with scratch.open("wb") as out:
        writer = SparseWriter(out)
        for start in range(0, len(data), 2 * block + 7):  # chunks across block boundaries
            writer.write(data[start : start + 2 * block + 7])
        writer.close()
    assert scratch.read_bytes() == data
    assert scratch.stat().st_blocks * 512 <= len(data) - 4 * block


# ---------------------------------------------------------------- real images


@pytest.fixture(scope="module")
def source_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return populate_root(tmp_path_factory.mktemp("source") / "root")


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory, source_root: Path) -> Path:
    if any(shutil.which(t) is None for t in REQUIRED_TOOLS):
        pytest.skip(f"needs {', '.join(REQUIRED_TOOLS)}")
    return build_sd_image(tmp_path_factory.mktemp("image") / "pi.img", root_dir=source_root)


@pytest.fixture
def staging(tmp_path: Path) -> Path:
    """What the caller prepares: a staging dir holding an empty ``root``."""
    (tmp_path / "staging" / "root").mkdir(parents=True)
    return tmp_path / "staging"


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
    """Everything a Pi would notice about a tree, keyed by relative path."""
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
            tree[relative] = (kind, mode, info.st_uid, info.st_gid, detail)
    return tree


def assert_no_children_left():
    children = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split()
    assert children == []


def assert_only_empty_root(staging: Path):
    assert [p.name for p in staging.iterdir()] == ["root"]
    assert list((staging / "root").iterdir()) == []
    assert_no_children_left()


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


# ---------------------------------------------------------------- rejected uploads


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


def written(tmp_path: Path, data: bytes) -> Path:
    target = tmp_path / "upload"
    target.write_bytes(data)
    return target


def tarball() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("etc/hostname")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"pi4\n"))
    return buffer.getvalue()


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


def test_upload_over_the_limit_is_too_large_and_leaves_nothing_behind(image, staging):
    with pytest.raises(UploadTooLarge) as caught:
        import_file(image, staging, max_bytes=10 * MIB)
    assert caught.value.code == "too_large"
    assert_only_empty_root(staging)


def test_compressed_upload_over_the_limit_kills_the_decompressor(image, staging):
    with pytest.raises(UploadTooLarge):
        import_file(compressed(image, "gzip", ".gz"), staging, max_bytes=4096)
    assert_only_empty_root(staging)


@pytest.mark.parametrize("compress", [gzip.compress, lzma.compress], ids=["gz", "xz"])
def test_decompression_bomb_stops_at_the_limit_and_leaves_nothing_behind(
    staging, tmp_path, compress
):
    bomb = written(tmp_path, compress(bytes(50 * MIB)))
    assert bomb.stat().st_size < MIB
    with pytest.raises(UploadTooLarge, match="decompresses to more than the limit of 10485760"):
        import_file(bomb, staging, max_bytes=10 * MIB)
    assert_only_empty_root(staging)


@root_and_tools
def test_image_exactly_at_the_limit_decompresses(image, staging):
    result = import_file(compressed(image, "xz", ".xz"), staging, max_bytes=image.stat().st_size)
    assert result.image_size == image.stat().st_size


# ---------------------------------------------------------------- hostile root trees


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


# ---------------------------------------------------------------- awkward block maps


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
    """Files whose data is laid out in every way an ext4 block map can express."""
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
