"""Bakeform import: receive an uploaded SD card image, check it, extract boot and root.

An uploaded image is hostile input. No kernel filesystem driver ever parses it: the
partition table, FAT boot sector and ext4 superblock are checked here in Python before
any tool touches the bytes, the boot partition is read with mtools and the root with
``debugfs`` (libext2fs, user space). The root tree is listed and vetted first (unique
names, no ``/`` in names, no directory reachable twice), so every path written is a fresh,
unique path below ``staging/root`` and nothing is written through a symlink. Block maps
are vetted too (inside the filesystem, no block shared by two files), so a small image
cannot expand into a huge tree, and the decompressed image is capped like the upload.

The upload is streamed: hashed while received (in a thread that may trail the write a
little and finish while extraction starts), decompressed by ``xz``/``pigz`` in a child
process, written once to a temporary raw image in ``staging`` (the extractors need random
access) and removed before returning, usually before the kernel ever wrote it to disk:
debugfs fsyncs its device when it exits, even read-only, which flushed the whole scratch
image (0.4 s per GiB here), so it runs under ``eatmydata`` where that is installed.
Boot and root are extracted in parallel.
The root is built here from debugfs' listing and ``stat`` of every inode: file data is
copied straight from the raw image by block map with ``copy_file_range`` (large in-kernel
copies; ``debugfs rdump`` reads and writes 4 KiB at a time and took most of an import),
only symlinks and inline-data files go through ``rdump``.

Fidelity of the root tree (as root): contents, modes including setuid/setgid/sticky,
owners (symlinks too), symlink targets, hard links, sparse files (holes and unwritten
extents stay holes), fifos and device nodes, atime/mtime to the nanosecond. Gaps:
extended attributes and ACLs (Raspberry Pi OS uses a few ``security.capability`` xattrs,
e.g. on ``ping``, which fall back to setuid-less binaries), ctime/crtime (not settable),
sockets (meaningless in an image).
"""

from __future__ import annotations

import functools
import hashlib
import os
import queue
import re
import shutil
import signal
import stat
import struct
import subprocess
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

CHUNK = 1024 * 1024
#: Chunks the upload's hash may trail the write by (SHA-256 at ~2 GB/s is slower than
#: writing to the page cache): it finishes while extraction starts. The memory an import
#: may hold; only a local upload outruns the hash, one over the network never does.
#: bench/import.py on 1 GiB: 64 chunks 1.32 s, 128 1.24 s, 192 1.01 s, 256 1.00 s.
HASH_LAG = 192
SECTOR = 512
RAW_NAME = ".upload.img"
FAT_TYPES = {0x01: "FAT12", 0x04: "FAT16", 0x06: "FAT16", 0x0B: "FAT32", 0x0C: "FAT32 LBA",
             0x0E: "FAT16 LBA"}  # fmt: skip
LINUX_TYPE = 0x83
GPT_PROTECTIVE = 0xEE
EXT_MAGIC = 0xEF53
EXT4_INCOMPAT_EXTENTS = 0x40
EXT4_INCOMPAT_64BIT = 0x80
EXT4_HUGE_FILE_FL = 0x40000
EXT4_INLINE_DATA_FL = 0x10000000
ROOT_INODE = 2
#: Threads copying root file data (the machines have 2 cores; rdump runs beside them).
COPY_THREADS = 2
_MAGICS = ((b"\xfd7zXZ\x00", "xz"), (b"\x1f\x8b", "gz"))
_MTOOLS_ENV = {**os.environ, "MTOOLS_SKIP_CHECK": "1", "LC_ALL": "C"}


class ImageError(ValueError):
    """Upload rejected; .code is a short machine string, str(exc) a precise human message."""

    code: str

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class UploadTooLarge(ImageError):
    """More bytes arrived than the caller allows (the API answers 413)."""

    def __init__(self, message: str) -> None:
        super().__init__("too_large", message)


@dataclass(frozen=True)
class ImportedImage:
    sha256: str  # of the bytes received (as uploaded, compressed or not)
    size: int  # bytes received
    image_size: int  # bytes of the raw image
    compression: str  # "none" | "xz" | "gz", from magic bytes
    cmdline: str  # the boot partition's cmdline.txt, stripped ("" if absent)


@dataclass(frozen=True)
class Partition:
    """One MBR entry; ``number`` counts from 1 like ``/dev/mmcblk0p<number>``."""

    number: int
    type: int
    start_sector: int
    sectors: int

    @property
    def offset(self) -> int:
        return self.start_sector * SECTOR

    @property
    def end(self) -> int:
        return (self.start_sector + self.sectors) * SECTOR

    def describe(self) -> str:
        return f"partition {self.number} (type 0x{self.type:02x})"


@dataclass(frozen=True)
class Layout:
    """Where the boot and root filesystems of a validated image are."""

    boot: Partition
    root: Partition


# ---------------------------------------------------------------- import


def import_image(
    stream: BinaryIO,
    staging: Path,
    *,
    max_bytes: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> ImportedImage:
    """Receive ``stream``, validate it and extract it into ``staging/boot`` and ``staging/root``.

    ``staging/root`` must exist and be empty (it may be a btrfs subvolume, so it is filled,
    never recreated). On failure ``staging`` is put back as it was (only the empty
    ``root``), no child process is left running, and ImageError says why.
    """
    raw = staging / RAW_NAME
    digest = hashlib.sha256()
    try:
        # The hash may trail the write by HASH_LAG and finish while extraction starts.
        with _InBackground(digest.update, depth=HASH_LAG) as hash_chunk:
            size, compression = _receive(stream, raw, hash_chunk, max_bytes, progress)
            image_size = raw.stat().st_size
            layout = read_layout(raw)
            cmdline = _extract(raw, layout, staging)
    except BaseException:
        _reset_staging(staging)
        raise
    finally:
        raw.unlink(missing_ok=True)
    return ImportedImage(digest.hexdigest(), size, image_size, compression, cmdline)


def _reset_staging(staging: Path) -> None:
    shutil.rmtree(staging / "boot", ignore_errors=True)
    for child in (staging / "root").iterdir():
        _remove(child)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


# ---------------------------------------------------------------- receiving


def detect_compression(head: bytes) -> str:
    """ "xz", "gz" or "none", from the first bytes (a filename says nothing about content)."""
    for magic, name in _MAGICS:
        if head.startswith(magic):
            return name
    return "none"


def _receive(
    stream: BinaryIO,
    raw: Path,
    hash_chunk: Callable[[bytes], None],
    max_bytes: int | None,
    progress: Callable[[int], None] | None,
) -> tuple[int, str]:
    """Count the upload, pass every chunk to ``hash_chunk`` and (decompress and) write it
    to ``raw``; hashing and the sink run in other threads or a process, so reading,
    hashing, decompressing and writing overlap. Returns the upload's size and its
    compression."""
    head = stream.read(CHUNK)
    if not head:
        raise ImageError("empty", "the upload is empty (0 bytes received)")
    compression = detect_compression(head)
    received = 0
    with raw.open("wb") as out, _sink(compression, out, max_bytes) as write:
        for chunk in _chunks(head, stream):
            received += len(chunk)
            if max_bytes is not None and received > max_bytes:
                raise UploadTooLarge(f"upload exceeds the limit of {max_bytes} bytes")
            hash_chunk(chunk)
            write(chunk)
            if progress is not None:
                progress(received)
    return received, compression


def _chunks(head: bytes, stream: BinaryIO) -> Iterator[bytes]:
    yield head
    while chunk := stream.read(CHUNK):
        yield chunk


class _SparseWriter:
    """Writes a raw image leaving holes where it is all zeros (a Pi image's free space):
    less to write now, and less to free (and discard) when the scratch copy is deleted."""

    BLOCK = 64 * 1024
    ZEROS = bytes(BLOCK)

    def __init__(self, target: BinaryIO) -> None:
        self._target = target
        self._size = 0

    def write(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        data_from = None  # start of the run of non-zero blocks being collected
        for start in range(0, len(chunk), self.BLOCK):
            end = min(start + self.BLOCK, len(chunk))
            zeros = self._is_zeros(chunk, start, end)
            if zeros and data_from is not None:
                self._write_at(view, data_from, start)
                data_from = None
            elif not zeros and data_from is None:
                data_from = start
        if data_from is not None:
            self._write_at(view, data_from, len(chunk))
        self._size += len(chunk)

    def _is_zeros(self, chunk: bytes, start: int, end: int) -> bool:
        """A memcmp against zeros (startswith copies nothing and stops at the first
        non-zero byte): a byte-counting scan held the GIL long enough to slow the hashing
        thread down by a third."""
        zeros = self.ZEROS if end - start == self.BLOCK else bytes(end - start)
        return chunk.startswith(zeros, start, end)

    def _write_at(self, view: memoryview, start: int, end: int) -> None:
        self._target.seek(self._size + start)
        self._target.write(view[start:end])

    def close(self) -> None:
        self._target.truncate(self._size)


class _InBackground:
    """Feeds chunks to ``consume`` in a background thread through a queue of ``depth``
    chunks (the most it may trail the producer, and the memory it may hold).

    A context manager whose value is the producer's ``write(chunk)``; leaving it waits
    until every chunk is consumed. A failure of ``consume`` is raised to the producer.
    """

    def __init__(self, consume: Callable[[bytes], object], depth: int = 8) -> None:
        self._consume = consume
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def __enter__(self) -> Callable[[bytes], None]:
        return self.write

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self._error is not None:
                continue  # drain so the producer never blocks
            try:
                self._consume(chunk)
            except BaseException as exc:  # reported to the producer in write()/close()
                self._error = exc

    def write(self, chunk: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(chunk)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error


@contextmanager
def _sink(
    compression: str, out: BinaryIO, max_bytes: int | None
) -> Iterator[Callable[[bytes], None]]:
    """A ``write(chunk)`` whose bytes land, decompressed, in ``out``: at most ``max_bytes``
    of them, enforced by the kernel (a file size limit on the decompressor), so a small
    compressed bomb cannot fill the disk."""
    if compression == "none":
        sparse = _SparseWriter(out)
        writer = _InBackground(sparse.write)
        try:
            yield writer.write
        finally:
            writer.close()
            sparse.close()
        return
    limit = [] if max_bytes is None else ["prlimit", f"--fsize={max_bytes}", "--core=0", "--"]
    process = subprocess.Popen(
        [*limit, *_decompressor(compression)],
        stdin=subprocess.PIPE,
        stdout=out,
        stderr=subprocess.PIPE,
    )
    writer = _InBackground(process.stdin.write)  # type: ignore[union-attr]
    failed = True
    try:
        yield writer.write
        failed = False
    finally:
        error = _finish_decompressor(process, writer, failed=failed)
    if process.returncode != 0:
        _decompression_failed(out, compression, max_bytes, process.returncode, error)


def _finish_decompressor(
    process: subprocess.Popen[bytes], writer: _InBackground, *, failed: bool
) -> str:
    """Reap the decompressor (killed if receiving failed); what it said on stderr."""
    if failed:
        process.kill()
    try:
        writer.close()
        process.stdin.close()  # type: ignore[union-attr]
    except (BrokenPipeError, OSError):
        pass  # the decompressor died; its exit status says why
    error = process.stderr.read().decode(errors="replace").strip()  # type: ignore[union-attr]
    process.stderr.close()  # type: ignore[union-attr]
    process.wait()
    return error


def _decompression_failed(
    out: BinaryIO, compression: str, max_bytes: int | None, returncode: int, error: str
) -> None:
    """The size limit kills the decompressor with SIGXFSZ (or fails its write with EFBIG,
    leaving ``max_bytes`` behind); anything else is a corrupt stream."""
    if max_bytes is not None and (
        returncode == -signal.SIGXFSZ or os.fstat(out.fileno()).st_size >= max_bytes
    ):
        raise UploadTooLarge(
            f"the upload decompresses to more than the limit of {max_bytes} bytes "
            f"({compression} data expanding beyond the largest image allowed)"
        )
    detail = error or f"exit {returncode}"
    raise ImageError("decompress_failed", f"{compression} decompression failed: {detail}")


def _decompressor(compression: str) -> list[str]:
    if compression == "xz":
        return ["xz", "--decompress", "--stdout", "--threads=0"]
    return [shutil.which("pigz") or "gzip", "--decompress", "--stdout"]


# ---------------------------------------------------------------- validation


def parse_mbr(sector: bytes) -> list[Partition]:
    """The used entries of a classic MBR partition table in ``sector`` (the first 512 bytes).

    Pure, so the hostile-input edge cases are tested without files.
    """
    if len(sector) < SECTOR:
        raise ImageError(
            "not_an_image", f"not a disk image: {len(sector)} bytes, shorter than one sector"
        )
    if sector[510:512] != b"\x55\xaa":
        found = sector[510:512].hex()
        raise ImageError(
            "not_an_image", f"not a disk image: no MBR signature 55aa at byte 510 (found {found})"
        )
    partitions = [_parse_entry(sector, number) for number in range(1, 5)]
    used = [p for p in partitions if p is not None]
    if not used:
        raise ImageError("bad_partition_table", "the MBR partition table has no partitions")
    return used


def _parse_entry(sector: bytes, number: int) -> Partition | None:
    entry = sector[446 + 16 * (number - 1) : 446 + 16 * number]
    status, kind, start, count = entry[0], entry[4], *struct.unpack_from("<II", entry, 8)
    if kind == 0:
        return None
    if kind == GPT_PROTECTIVE:
        raise ImageError(
            "bad_partition_table",
            f"partition {number} is a GPT protective entry (type 0xee): GPT images are not "
            "supported, a Raspberry Pi SD image has an MBR partition table",
        )
    if status not in (0x00, 0x80):
        raise ImageError(
            "bad_partition_table",
            f"partition {number} has an invalid boot flag 0x{status:02x} (expected 0x00 or 0x80)",
        )
    if start == 0 or count == 0:
        raise ImageError(
            "bad_partition_table",
            f"partition {number} (type 0x{kind:02x}) starts at sector {start} with {count} sectors",
        )
    return Partition(number, kind, start, count)


def choose_partitions(partitions: list[Partition], image_size: int) -> Layout:
    """The first FAT partition is the boot partition, the first Linux one the root."""
    boot = next((p for p in partitions if p.type in FAT_TYPES), None)
    if boot is None:
        found = ", ".join(p.describe() for p in partitions)
        raise ImageError(
            "no_fat_boot",
            f"no FAT boot partition (type 0x0b/0x0c/0x0e/0x06) in the partition table: {found}",
        )
    root = next((p for p in partitions if p.type == LINUX_TYPE), None)
    if root is None:
        found = ", ".join(p.describe() for p in partitions)
        raise ImageError(
            "no_ext4_root", f"no Linux root partition (type 0x83) in the partition table: {found}"
        )
    for partition in (boot, root):
        if partition.end > image_size:
            raise ImageError(
                "truncated",
                f"image is truncated: {partition.describe()} ends at byte {partition.end} "
                f"but the image has only {image_size} bytes",
            )
    if boot.offset < root.end and root.offset < boot.end:
        raise ImageError(
            "bad_partition_table",
            f"{boot.describe()} and {root.describe()} overlap",
        )
    return Layout(boot, root)


def check_fat_boot_sector(sector: bytes, partition: Partition) -> None:
    """A FAT volume boot record: jump, signature and sane BIOS parameter block."""
    where = f"{partition.describe()}, the boot partition,"
    if sector[510:512] != b"\x55\xaa" or sector[0] not in (0xEB, 0xE9):
        raise ImageError(
            "no_fat_boot",
            f"{where} has no FAT boot sector (expected a jump instruction and signature 55aa, "
            f"found {sector[0]:02x}... and {sector[510:512].hex()})",
        )
    bytes_per_sector, per_cluster, reserved, fats = struct.unpack_from("<HBHB", sector, 11)
    if bytes_per_sector not in (512, 1024, 2048, 4096):
        raise ImageError(
            "no_fat_boot", f"{where} has an invalid FAT sector size {bytes_per_sector}"
        )
    if per_cluster == 0 or per_cluster & (per_cluster - 1) or reserved == 0 or fats not in (1, 2):
        raise ImageError(
            "no_fat_boot",
            f"{where} has an invalid FAT parameter block (sectors per cluster {per_cluster}, "
            f"reserved sectors {reserved}, FAT copies {fats})",
        )


def check_ext4_superblock(superblock: bytes, partition: Partition) -> None:
    """The ext superblock (1024 bytes at +1024): magic, ext4 extents, fits its partition."""
    where = f"{partition.describe()}, the root partition,"
    (magic,) = struct.unpack_from("<H", superblock, 56)
    if magic != EXT_MAGIC:
        raise ImageError(
            "no_ext4_root",
            f"{where} has no ext2/3/4 filesystem (expected superblock magic 0xef53 at byte "
            f"1080, found 0x{magic:04x})",
        )
    (incompat,) = struct.unpack_from("<I", superblock, 96)
    if not incompat & EXT4_INCOMPAT_EXTENTS:
        raise ImageError(
            "no_ext4_root",
            f"{where} holds ext2/ext3, not ext4 (the 'extents' feature is not set)",
        )
    (log_block,) = struct.unpack_from("<I", superblock, 24)
    if log_block > 6:
        raise ImageError("no_ext4_root", f"{where} has an invalid block size 2^{10 + log_block}")
    fs_bytes = ext4_geometry(superblock).bytes
    if fs_bytes > partition.sectors * SECTOR:
        raise ImageError(
            "no_ext4_root",
            f"{where} holds a filesystem of {fs_bytes} bytes, larger than the partition "
            f"({partition.sectors * SECTOR} bytes)",
        )


@dataclass(frozen=True)
class Geometry:
    """Block size and count of an ext filesystem: block maps are checked against them."""

    block_size: int
    blocks: int

    @property
    def bytes(self) -> int:
        return self.block_size * self.blocks


def ext4_geometry(superblock: bytes) -> Geometry:
    (log_block,) = struct.unpack_from("<I", superblock, 24)
    (incompat,) = struct.unpack_from("<I", superblock, 96)
    blocks = struct.unpack_from("<I", superblock, 4)[0]
    if incompat & EXT4_INCOMPAT_64BIT:
        blocks |= struct.unpack_from("<I", superblock, 0x150)[0] << 32
    return Geometry(1024 << log_block, blocks)


def read_layout(raw: Path) -> Layout:
    """Validate the image file's partition table, FAT and ext4 headers; where to extract."""
    image_size = raw.stat().st_size
    with raw.open("rb") as f:
        layout = choose_partitions(parse_mbr(f.read(SECTOR)), image_size)
        f.seek(layout.boot.offset)
        check_fat_boot_sector(f.read(SECTOR), layout.boot)
        f.seek(layout.root.offset + 1024)
        check_ext4_superblock(f.read(1024), layout.root)
    return layout


# ---------------------------------------------------------------- extraction


def _extract(raw: Path, layout: Layout, staging: Path) -> str:
    """Boot and root in parallel (each is one child process most of the time)."""
    boot_dir = staging / "boot"
    boot_dir.mkdir()
    with ThreadPoolExecutor(max_workers=2) as pool:
        boot = pool.submit(_extract_boot, raw, layout.boot, boot_dir)
        root = pool.submit(_extract_root, raw, layout.root, staging / "root")
        errors = [f.exception() for f in (boot, root)]
    for error in errors:
        if error is not None:
            raise error
    return read_cmdline(boot_dir)


def read_cmdline(boot_dir: Path) -> str:
    """The kernel command line an extracted boot partition carries, stripped ("" if none)."""
    cmdline = boot_dir / "cmdline.txt"
    if not cmdline.is_file():
        return ""
    return cmdline.read_text(errors="replace").strip()


def _extract_boot(raw: Path, partition: Partition, dest: Path) -> None:
    image = f"{raw}@@{partition.offset}"
    listing = _run(["mdir", "-/", "-b", "-i", image, "::/"], env=_MTOOLS_ENV, code="no_fat_boot")
    for line in listing.decode(errors="replace").splitlines():
        check_fat_path(line)
    _run(
        ["mcopy", "-s", "-n", "-p", "-m", "-i", image, "::/", f"{dest}/"],
        env=_MTOOLS_ENV,
        code="extract_failed",
    )
    os.utime(dest)  # mcopy -m stamps it with the FAT root's nonexistent date (year 2098)


def check_fat_path(listed: str) -> None:
    """Refuse a boot partition name that could make mcopy write outside its destination."""
    path = listed.removeprefix("::/").rstrip("/")
    parts = path.split("/")
    if any(part in ("", ".", "..") or "\\" in part for part in parts) and path:
        raise ImageError("extract_failed", f"boot partition holds an unsafe file name {listed!r}")


@dataclass(frozen=True)
class Entry:
    """One directory entry of the root filesystem, as ``debugfs ls -p`` reports it."""

    path: bytes  # relative to the root, b"" for the root itself
    inode: int
    mode: int
    uid: int
    gid: int
    size: int


def _extract_root(raw: Path, partition: Partition, dest: Path) -> None:
    """Vet the tree with debugfs, then build it here: directories, special files and all
    metadata from debugfs' listing and ``stat``, file data copied straight from the image
    by block map (``copy_file_range``: large in-kernel copies, reflinks where the
    filesystem shares blocks). Only symlinks and files without a usable block map (inline
    data) go through ``rdump``, into a scratch directory, in parallel with the copies."""
    # debugfs splits its command line on blanks, so it runs inside ``dest`` with relative
    # paths; ``?offset=`` makes libext2fs read the partition in place.
    device = f"{os.path.relpath(raw, dest)}?offset={partition.offset}"
    entries = list_root_tree(device, dest)
    with ThreadPoolExecutor(max_workers=1) as pool:
        stat_job = pool.submit(_inode_details, device, dest, entries)
        _make_directories(dest, entries)  # while debugfs runs
        details = stat_job.result()
    with raw.open("rb") as image:
        image.seek(partition.offset + 1024)
        geometry = ext4_geometry(image.read(1024))
        plan = _plan_root(entries, details, geometry, partition.offset)
        with _scratch_dir(dest, entries) as scratch:
            _write_in_parallel(image.fileno(), dest, plan, device, scratch)
            _place_dumped(dest, scratch, plan.dumped, details)
    for names in plan.special:
        _make_special(dest, names, details[names[0].inode])
    _finish_directories(dest, entries, details)


def list_root_tree(device: str, cwd: Path) -> list[Entry]:
    """Every entry of the filesystem, breadth first, one debugfs run per tree level.

    Rejects what would make ``rdump`` write outside its destination or loop: names with
    ``/``, duplicate names in a directory, a directory reachable twice, bogus ``.``/``..``.
    """
    root = Entry(b"", ROOT_INODE, stat.S_IFDIR | 0o755, 0, 0, 0)
    entries = [root]
    level = {ROOT_INODE: b""}
    seen_dirs = {ROOT_INODE}
    while level:
        listings = _list_dirs(device, cwd, list(level))
        next_level: dict[int, bytes] = {}
        for inode, path in level.items():
            children = _children(listings.get(inode, []), inode, path)
            if inode == ROOT_INODE:
                entries[0] = children.pop(0)
            for child in children:
                entries.append(child)
                if not stat.S_ISDIR(child.mode):
                    continue
                if child.inode in seen_dirs:
                    _corrupt(f"directory inode {child.inode} is linked twice (at {child.path!r})")
                seen_dirs.add(child.inode)
                next_level[child.inode] = child.path
        level = next_level
    return entries


def _children(listing: list[tuple[int, int, int, int, bytes, int]], inode: int, path: bytes):
    """Entries of one directory; the root's own entry ('.') first when ``path`` is root."""
    if len(listing) < 2 or listing[0][4] != b"." or listing[1][4] != b"..":
        _corrupt(f"directory {path or b'/'!r} (inode {inode}) lacks its '.' and '..' entries")
    dot = listing[0]
    if dot[0] != inode or not stat.S_ISDIR(dot[1]) or not stat.S_ISDIR(listing[1][1]):
        _corrupt(f"directory {path or b'/'!r} (inode {inode}) has bogus '.' or '..' entries")
    children = [Entry(b"", inode, dot[1], dot[2], dot[3], 0)] if not path else []
    names: set[bytes] = set()
    for child_inode, mode, uid, gid, name, size in listing[2:]:
        if child_inode == 0:
            continue  # an unused slot (lost+found is full of them)
        if name in (b"", b".", b"..") or name in names:
            _corrupt(f"directory {path or b'/'!r} has a duplicate or reserved name {name!r}")
        names.add(name)
        child_path = path + b"/" + name if path else name
        children.append(Entry(child_path, child_inode, mode, uid, gid, size))
    return children


_SECTION = re.compile(rb"^debugfs: \w+ (?:-p )?<(\d+)>$")


def _sections(output: bytes) -> Iterator[tuple[int, list[bytes]]]:
    """Split debugfs -f output into (inode, lines) per echoed command."""
    inode, lines = None, []
    for line in output.split(b"\n"):
        match = _SECTION.match(line)
        if match:
            if inode is not None:
                yield inode, lines
            inode, lines = int(match.group(1)), []
        elif line and inode is not None:
            lines.append(line)
    if inode is not None:
        yield inode, lines


def _list_dirs(
    device: str, cwd: Path, inodes: list[int]
) -> dict[int, list[tuple[int, int, int, int, bytes, int]]]:
    output = _debugfs(device, cwd, [f"ls -p <{i}>" for i in inodes], code="corrupt_root")
    return {inode: [_parse_ls_line(line) for line in lines] for inode, lines in _sections(output)}


def _parse_ls_line(line: bytes) -> tuple[int, int, int, int, bytes, int]:
    fields = line.split(b"/")
    if len(fields) != 8 or fields[0] or fields[7]:
        _corrupt(f"root filesystem has an unsafe file name (contains '/' or a newline): {line!r}")
    try:
        numbers = [int(fields[1]), int(fields[2], 8), int(fields[3]), int(fields[4])]
        size = int(fields[6] or 0)
    except ValueError:
        _corrupt(f"debugfs listed an unreadable entry: {line!r}")
    return (*numbers, fields[5], size)  # type: ignore[return-value]


def _corrupt(message: str) -> None:
    raise ImageError("corrupt_root", f"root filesystem rejected: {message}")


@dataclass(frozen=True)
class Run:
    """Consecutive blocks of a file, as debugfs lists an extent or a block map range."""

    logical: int  # first block in the file
    physical: int  # first block in the filesystem
    length: int  # blocks
    written: bool  # False for an unwritten (preallocated) extent: it reads as zeros


@dataclass(frozen=True)
class InodeDetails:
    """What ``ls -p`` does not say."""

    atime: tuple[int, int]  # seconds, nanoseconds
    mtime: tuple[int, int]
    blocks: int  # 512-byte units allocated (data, map and extended attribute blocks)
    device: tuple[int, int] | None  # major, minor of device nodes
    flags: int
    xattr_block: bool
    runs: tuple[Run, ...] | None  # None: debugfs listed no block map we understand
    map_blocks: int  # blocks of the extent tree or indirect blocks themselves


def _inode_details(device: str, cwd: Path, entries: list[Entry]) -> dict[int, InodeDetails]:
    """``stat`` of every inode, in one debugfs run."""
    inodes = sorted({e.inode for e in entries})
    output = _debugfs(device, cwd, [f"stat <{i}>" for i in inodes], code="corrupt_root")
    sections = list(_sections(output))
    if [inode for inode, _ in sections] != inodes:
        _corrupt("debugfs stat output does not match the inodes asked for")
    return {inode: _parse_stat(b"\n".join(lines)) for inode, lines in sections}


_MAP_RUN = re.compile(rb"\((\d+)(?:-(\d+))?(\[u\])?\):(\d+)(?:-(\d+))?")
_MAP_NODE = re.compile(rb"\((?:ETB\d+|IND|DIND|TIND)\):\d+")
_MAP_SEPARATORS = re.compile(rb"[ ,]*")


def _parse_stat(text: bytes) -> InodeDetails:
    def number(pattern: bytes, base: int = 10) -> int:
        match = re.search(pattern, text)
        return int(match.group(1), base) if match else 0

    def time_of(name: bytes) -> tuple[int, int]:
        match = re.search(rb"\b" + name + rb": 0x([0-9a-f]+)(?::([0-9a-f]+))?", text)
        if match is None:
            return 0, 0
        extra = int(match.group(2) or b"0", 16)
        return int(match.group(1), 16) + ((extra & 3) << 32), extra >> 2

    device = re.search(rb"Device major/minor number: ([0-9]+):([0-9]+)", text)
    block_map = re.search(rb"^(?:EXTENTS|BLOCKS):\n?(.*)$", text, re.MULTILINE)
    runs, map_blocks = _parse_block_map(block_map.group(1)) if block_map else (None, 0)
    return InodeDetails(
        atime=time_of(b"atime"),
        mtime=time_of(b"mtime"),
        blocks=number(rb"Blockcount: (\d+)"),
        device=(int(device.group(1)), int(device.group(2))) if device else None,
        flags=number(rb"Flags: 0x([0-9a-f]+)", 16),
        xattr_block=number(rb"File ACL: (\d+)") != 0,
        runs=runs,
        map_blocks=map_blocks,
    )


def _parse_block_map(line: bytes) -> tuple[tuple[Run, ...] | None, int]:
    """Runs and map blocks of a line like ``(0-11):2138-2149, (IND):2150, (12[u]):2151``;
    (None, 0) if anything on it is not understood."""
    runs = []
    for match in _MAP_RUN.finditer(line):
        first, last, unwritten, physical, physical_last = match.groups()
        length = int(last or first) - int(first) + 1
        if int(physical_last or physical) - int(physical) + 1 != length or length < 1:
            return None, 0
        runs.append(Run(int(first), int(physical), length, unwritten is None))
    nodes = len(_MAP_NODE.findall(line))
    if _MAP_SEPARATORS.fullmatch(_MAP_NODE.sub(b"", _MAP_RUN.sub(b"", line))) is None:
        return None, 0
    return tuple(runs), nodes


@dataclass(frozen=True)
class FileCopy:
    """A regular file written from the image: (image offset, file offset, bytes) ranges."""

    names: list[Entry]  # every name of the inode: the first is written, the others linked
    info: InodeDetails
    ranges: list[tuple[int, int, int]]


@dataclass(frozen=True)
class RootPlan:
    """How each non-directory inode of the root gets written."""

    copies: list[FileCopy]
    dumped: list[list[Entry]]  # symlinks and files rdump writes
    special: list[list[Entry]]  # fifos and device nodes, made with mknod


def _plan_root(
    entries: list[Entry], details: dict[int, InodeDetails], geometry: Geometry, offset: int
) -> RootPlan:
    """Sort the inodes by how they are written, and refuse block maps that point outside
    the filesystem, share blocks between files (a way to multiply a small image into a
    huge tree) or files without a block map that claim more bytes than the filesystem."""
    names: dict[int, list[Entry]] = defaultdict(list)
    for entry in entries:
        if not stat.S_ISDIR(entry.mode) and not stat.S_ISSOCK(entry.mode):
            names[entry.inode].append(entry)
    plan = RootPlan([], [], [])
    dumped_bytes = 0
    for inode, same in names.items():
        info, first = details[inode], same[0]
        if not stat.S_ISLNK(first.mode) and not stat.S_ISREG(first.mode):
            plan.special.append(same)
        elif stat.S_ISREG(first.mode) and _block_map_complete(info, geometry):
            plan.copies.append(FileCopy(same, info, _ranges(first, info, geometry, offset)))
        else:
            plan.dumped.append(same)
            dense = stat.S_ISREG(first.mode) and not info.flags & EXT4_INLINE_DATA_FL
            dumped_bytes += first.size if dense else 0  # rdump writes holes as zeros
    if dumped_bytes > geometry.bytes:
        _corrupt(
            f"files without a block map claim {dumped_bytes} bytes, more than the "
            f"filesystem's {geometry.bytes}"
        )
    _check_no_shared_blocks(plan.copies)
    return plan


def _block_map_complete(info: InodeDetails, geometry: Geometry) -> bool:
    """The listed block map accounts for every allocated block (so no data is elsewhere,
    e.g. inline in the inode) and the file is not one of the rare special layouts."""
    if info.runs is None or info.flags & (EXT4_INLINE_DATA_FL | EXT4_HUGE_FILE_FL):
        return False
    listed = sum(run.length for run in info.runs) + info.map_blocks + info.xattr_block
    return listed * geometry.block_size == info.blocks * 512


def _ranges(
    entry: Entry, info: InodeDetails, geometry: Geometry, offset: int
) -> list[tuple[int, int, int]]:
    ranges = []
    size = geometry.block_size
    for run in info.runs or ():
        if run.physical + run.length > geometry.blocks or run.physical == 0:
            _corrupt(
                f"{entry.path!r} (inode {entry.inode}) maps blocks {run.physical}+"
                f"{run.length} outside the filesystem of {geometry.blocks} blocks"
            )
        start = run.logical * size
        if run.written and start < entry.size:
            length = min(run.length * size, entry.size - start)
            ranges.append((offset + run.physical * size, start, length))
    return ranges


def _check_no_shared_blocks(copies: list[FileCopy]) -> None:
    extents = sorted(
        (run.physical, run.length, copy.names[0].inode)
        for copy in copies
        for run in copy.info.runs or ()
    )
    end, owner = 0, 0
    for physical, length, inode in extents:
        if physical < end:
            _corrupt(f"inodes {owner} and {inode} share block {physical}")
        end, owner = physical + length, inode


# ---------------------------------------------------------------- writing the root


def _make_directories(dest: Path, entries: list[Entry]) -> None:
    """Breadth first, so parents come first; private until finished."""
    for entry in entries:
        if entry.path and stat.S_ISDIR(entry.mode):
            os.mkdir(_path(dest, entry), 0o700)


def _finish_directories(dest: Path, entries: list[Entry], details: dict[int, InodeDetails]) -> None:
    """Deepest first and after every entry exists, so the times set here stay."""
    for entry in reversed(entries):
        if stat.S_ISDIR(entry.mode):
            _set_metadata(_path(dest, entry), entry, details[entry.inode])


def _path(dest: Path, entry: Entry) -> Path:
    return dest / os.fsdecode(entry.path) if entry.path else dest


@contextmanager
def _scratch_dir(dest: Path, entries: list[Entry]) -> Iterator[str]:
    """A directory for rdump's output, named unlike any top-level entry, relative to
    ``dest`` (on the same filesystem, so its files are renamed into place)."""
    taken = {e.path for e in entries if e.path and b"/" not in e.path}
    name = next(n for i in range(len(taken) + 1) if (n := f".rdump{i}").encode() not in taken)
    (dest / name).mkdir(0o700)
    yield name
    (dest / name).rmdir()


def _write_in_parallel(image: int, dest: Path, plan: RootPlan, device: str, scratch: str) -> None:
    """rdump in one child process while two threads copy file data (both cores busy:
    copy_file_range runs without the GIL)."""
    by_size = sorted(plan.copies, key=lambda copy: copy.names[0].size, reverse=True)
    with ThreadPoolExecutor(max_workers=1 + COPY_THREADS) as pool:
        jobs = [pool.submit(_rdump, device, dest, scratch, plan.dumped)]
        jobs += [
            pool.submit(_write_files, image, dest, by_size[index::COPY_THREADS])
            for index in range(COPY_THREADS)
        ]
        errors = [job.exception() for job in jobs]
    for error in errors:
        if error is not None:
            raise error


def _rdump(device: str, dest: Path, scratch: str, dumped: list[list[Entry]]) -> None:
    if dumped:
        commands = [f"rdump <{names[0].inode}> {scratch}" for names in dumped]
        _debugfs(device, dest, commands, code="extract_failed")


def _write_files(image: int, dest: Path, copies: list[FileCopy]) -> None:
    for copy in copies:
        first, *others = copy.names
        path = _path(dest, first)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        file = os.open(path, flags, 0o600)
        try:
            for source, target, length in copy.ranges:
                _copy_range(image, file, source, target, length)
            os.ftruncate(file, first.size)  # the holes at the end, or the cut of a last block
            _set_metadata(file, first, copy.info)
        finally:
            os.close(file)
        _link(path, dest, others)


def _copy_range(image: int, file: int, source: int, target: int, length: int) -> None:
    while length > 0:
        done = os.copy_file_range(image, file, length, source, target)
        if done == 0:
            raise ImageError("truncated", f"image is truncated: file data at byte {source}")
        source, target, length = source + done, target + done, length - done


def _place_dumped(
    dest: Path, scratch: str, dumped: list[list[Entry]], details: dict[int, InodeDetails]
) -> None:
    """Move rdump's output into place and give it what rdump does not set: symlink owners,
    special mode bits, holes (rdump writes them as zeros), times to the nanosecond."""
    for names in dumped:
        first, *others = names
        info = details[first.inode]
        path = _path(dest, first)
        os.rename(dest / scratch / f"<{first.inode}>", path)
        if stat.S_ISLNK(first.mode):
            os.chown(path, first.uid, first.gid, follow_symlinks=False)
            os.utime(path, ns=_times(info), follow_symlinks=False)
        else:
            os.truncate(path, first.size)  # rdump writes inline data whole, whatever the size
            if info.blocks * 512 < first.size:
                _run(["fallocate", "--dig-holes", str(path)], env=None, code="extract_failed")
            _set_metadata(path, first, info)
        _link(path, dest, others)


def _make_special(dest: Path, names: list[Entry], info: InodeDetails) -> None:
    first, *others = names
    path = _path(dest, first)
    os.mknod(path, first.mode, os.makedev(*info.device) if info.device else 0)
    _set_metadata(path, first, info)
    _link(path, dest, others)


def _set_metadata(target: int | Path, entry: Entry, info: InodeDetails) -> None:
    """Owner first (chown clears setuid/setgid), then the whole mode, then the times."""
    os.chown(target, entry.uid, entry.gid)
    os.chmod(target, stat.S_IMODE(entry.mode))
    os.utime(target, ns=_times(info))


def _times(info: InodeDetails) -> tuple[int, int]:
    return _ns(info.atime), _ns(info.mtime)


def _ns(seconds_and_nanos: tuple[int, int]) -> int:
    return seconds_and_nanos[0] * 1_000_000_000 + seconds_and_nanos[1]


def _link(path: Path, dest: Path, others: list[Entry]) -> None:
    for other in others:
        os.link(path, _path(dest, other), follow_symlinks=False)


# ---------------------------------------------------------------- child processes


def _debugfs(device: str, cwd: Path, commands: list[str], *, code: str) -> bytes:
    """Run debugfs read-only; any complaint on stderr (beyond its banner) is a failure,
    because debugfs exits 0 even when a command failed."""
    result = subprocess.run(
        [*_without_fsync(), "debugfs", "-f", "-", device],
        input="\n".join(commands).encode() + b"\n",
        cwd=cwd,
        capture_output=True,
        check=False,
    )
    complaints = [
        line
        for line in result.stderr.decode(errors="replace").splitlines()
        if line.strip() and not line.startswith("debugfs ")
    ]
    if result.returncode != 0 or complaints:
        detail = "; ".join(complaints[:3]) or f"exit {result.returncode}"
        raise ImageError(code, f"reading the root filesystem failed: {detail}")
    return result.stdout


@functools.cache
def _without_fsync() -> list[str]:
    """The prefix that makes debugfs' exit-time fsync a no-op, where eatmydata is
    installed (see the module docstring)."""
    return ["eatmydata"] if shutil.which("eatmydata") else []


def _run(args: list[str], *, env: dict[str, str] | None, code: str) -> bytes:
    result = subprocess.run(args, env=env, capture_output=True, check=False)
    if result.returncode != 0:
        detail = result.stderr.decode(errors="replace").strip() or f"exit {result.returncode}"
        raise ImageError(code, f"{args[0]} failed: {detail}")
    return result.stdout
