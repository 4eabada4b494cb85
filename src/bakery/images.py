"""Bakeform import: receive an uploaded SD card image, check it, extract boot and root.

An uploaded image is hostile input. No kernel filesystem driver ever parses it: the
partition table, FAT boot sector and ext4 superblock are checked here in Python before
any tool touches the bytes, the boot partition is read with mtools and the root with
``debugfs`` (libext2fs, user space). ``debugfs rdump`` writes through whatever path it is
given, so the root tree is listed and vetted first (unique names, no ``/`` in names,
no directory reachable twice): then every path rdump writes is a fresh, unique path
below ``staging/root`` and it never writes through a symlink it created.

The upload is streamed: hashed while received, decompressed by ``xz``/``pigz`` in a
child process, written once to a temporary raw image in ``staging`` (the extractors need
random access) and removed before returning. Boot and root are extracted in parallel.

Fidelity of the root tree (as root): contents, modes including setuid/setgid/sticky,
owners (symlinks too), symlink targets, hard links, sparse files, fifos and device nodes,
atime/mtime of files, dirs, symlinks and special files. Gaps: extended attributes and ACLs
(``rdump`` does not read them; Raspberry Pi OS uses a few ``security.capability`` xattrs,
e.g. on ``ping``, which fall back to setuid-less binaries), ctime/crtime (not settable),
sockets (meaningless in an image).
"""

from __future__ import annotations

import hashlib
import os
import queue
import re
import shutil
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
SECTOR = 512
RAW_NAME = ".upload.img"
FAT_TYPES = {0x01: "FAT12", 0x04: "FAT16", 0x06: "FAT16", 0x0B: "FAT32", 0x0C: "FAT32 LBA",
             0x0E: "FAT16 LBA"}  # fmt: skip
LINUX_TYPE = 0x83
GPT_PROTECTIVE = 0xEE
EXT_MAGIC = 0xEF53
EXT4_INCOMPAT_EXTENTS = 0x40
EXT4_INCOMPAT_64BIT = 0x80
ROOT_INODE = 2
#: Regular files at least this big are checked for holes (rdump writes holes as zeros).
SPARSE_CHECK_MIN = 1024 * 1024
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
    try:
        sha256, size, compression = _receive(stream, raw, max_bytes, progress)
        image_size = raw.stat().st_size
        layout = read_layout(raw)
        cmdline = _extract(raw, layout, staging)
    except BaseException:
        _reset_staging(staging)
        raise
    finally:
        raw.unlink(missing_ok=True)
    return ImportedImage(sha256, size, image_size, compression, cmdline)


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
    stream: BinaryIO, raw: Path, max_bytes: int | None, progress: Callable[[int], None] | None
) -> tuple[str, int, str]:
    """Hash, count and (decompress and) write the upload to ``raw``; the sink runs in
    another thread or process so hashing overlaps writing/decompressing."""
    head = stream.read(CHUNK)
    if not head:
        raise ImageError("empty", "the upload is empty (0 bytes received)")
    compression = detect_compression(head)
    digest = hashlib.sha256()
    received = 0
    with raw.open("wb") as out, _sink(compression, out) as write:
        for chunk in _chunks(head, stream):
            received += len(chunk)
            if max_bytes is not None and received > max_bytes:
                raise UploadTooLarge(f"upload exceeds the limit of {max_bytes} bytes")
            digest.update(chunk)
            write(chunk)
            if progress is not None:
                progress(received)
    return digest.hexdigest(), received, compression


def _chunks(head: bytes, stream: BinaryIO) -> Iterator[bytes]:
    yield head
    while chunk := stream.read(CHUNK):
        yield chunk


class _ThreadedWriter:
    """Writes chunks to a file object from a background thread through a short queue."""

    def __init__(self, target: BinaryIO) -> None:
        self._target = target
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=8)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self._error is not None:
                continue  # drain so the producer never blocks
            try:
                self._target.write(chunk)
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
def _sink(compression: str, out: BinaryIO) -> Iterator[Callable[[bytes], None]]:
    """A ``write(chunk)`` whose bytes land, decompressed, in ``out``."""
    if compression == "none":
        writer = _ThreadedWriter(out)
        try:
            yield writer.write
        finally:
            writer.close()
        return
    process = subprocess.Popen(
        _decompressor(compression), stdin=subprocess.PIPE, stdout=out, stderr=subprocess.PIPE
    )
    writer = _ThreadedWriter(process.stdin)  # type: ignore[arg-type]
    failed = True
    try:
        yield writer.write
        failed = False
    finally:
        _finish_decompressor(process, writer, compression, failed=failed)


def _finish_decompressor(
    process: subprocess.Popen[bytes], writer: _ThreadedWriter, compression: str, *, failed: bool
) -> None:
    """Reap the decompressor (killed if receiving failed) and report a corrupt stream."""
    if failed:
        process.kill()
    try:
        writer.close()
        process.stdin.close()  # type: ignore[union-attr]
    except (BrokenPipeError, OSError):
        pass  # the decompressor died; its exit status says why
    error = process.stderr.read().decode(errors="replace").strip()  # type: ignore[union-attr]
    process.stderr.close()  # type: ignore[union-attr]
    returncode = process.wait()
    if not failed and returncode != 0:
        raise ImageError(
            "decompress_failed",
            f"{compression} decompression failed: {error or f'exit {returncode}'}",
        )


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
    blocks = struct.unpack_from("<I", superblock, 4)[0]
    if incompat & EXT4_INCOMPAT_64BIT:
        blocks |= struct.unpack_from("<I", superblock, 0x150)[0] << 32
    fs_bytes = blocks * (1024 << log_block)
    if fs_bytes > partition.sectors * SECTOR:
        raise ImageError(
            "no_ext4_root",
            f"{where} holds a filesystem of {fs_bytes} bytes, larger than the partition "
            f"({partition.sectors * SECTOR} bytes)",
        )


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
    # debugfs splits its command line on blanks, so it runs inside ``dest`` with relative
    # paths; ``?offset=`` makes libext2fs read the partition in place.
    device = f"{os.path.relpath(raw, dest)}?offset={partition.offset}"
    entries = list_root_tree(device, dest)
    details = _inode_details(device, dest, entries)
    _debugfs(device, dest, ["rdump / ."], code="extract_failed")
    _restore(dest, entries, details)


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
class InodeDetails:
    """What ``ls -p`` does not say and rdump does not restore."""

    atime: tuple[int, int]  # seconds, nanoseconds
    mtime: tuple[int, int]
    blocks: int  # 512-byte units allocated
    device: tuple[int, int] | None  # major, minor of device nodes


def _needs_details(entry: Entry) -> bool:
    regular = stat.S_ISREG(entry.mode)
    return not (regular or stat.S_ISDIR(entry.mode)) or (regular and entry.size >= SPARSE_CHECK_MIN)


def _inode_details(device: str, cwd: Path, entries: list[Entry]) -> dict[int, InodeDetails]:
    inodes = sorted({e.inode for e in entries if _needs_details(e)})
    if not inodes:
        return {}
    output = _debugfs(device, cwd, [f"stat <{i}>" for i in inodes], code="corrupt_root")
    return {inode: _parse_stat(b"\n".join(lines)) for inode, lines in _sections(output)}


def _parse_stat(text: bytes) -> InodeDetails:
    def time_of(name: bytes) -> tuple[int, int]:
        match = re.search(rb"\b" + name + rb": 0x([0-9a-f]+):([0-9a-f]+)", text)
        if match is None:
            match = re.search(rb"\b" + name + rb": 0x([0-9a-f]+)()", text)
        if match is None:
            return 0, 0
        extra = int(match.group(2) or b"0", 16)
        return int(match.group(1), 16) + ((extra & 3) << 32), extra >> 2

    blocks = re.search(rb"Blockcount: (\d+)", text)
    device = re.search(rb"Device major/minor number: ([0-9]+):([0-9]+)", text)
    return InodeDetails(
        atime=time_of(b"atime"),
        mtime=time_of(b"mtime"),
        blocks=int(blocks.group(1)) if blocks else 0,
        device=(int(device.group(1)), int(device.group(2))) if device else None,
    )


def _restore(dest: Path, entries: list[Entry], details: dict[int, InodeDetails]) -> None:
    """Put back what rdump drops: special mode bits, symlink owners, hard links, holes,
    fifos and device nodes, symlink and special-file times."""
    by_inode: dict[int, list[Path]] = defaultdict(list)
    for entry in entries:
        path = dest / os.fsdecode(entry.path) if entry.path else dest
        info = details.get(entry.inode)
        if stat.S_ISLNK(entry.mode):
            os.lchown(path, entry.uid, entry.gid)
        elif stat.S_ISREG(entry.mode):
            by_inode[entry.inode].append(path)
            if info is not None and info.blocks * 512 < entry.size:
                _dig_holes(path)
        elif not stat.S_ISDIR(entry.mode):
            _make_special(path, entry, info)
        if not stat.S_ISLNK(entry.mode) and entry.mode & 0o7000:
            os.chmod(path, stat.S_IMODE(entry.mode))
        if info is not None and not stat.S_ISREG(entry.mode):
            os.utime(path, ns=(_ns(info.atime), _ns(info.mtime)), follow_symlinks=False)
    for paths in by_inode.values():
        _relink(paths)


def _ns(seconds_and_nanos: tuple[int, int]) -> int:
    return seconds_and_nanos[0] * 1_000_000_000 + seconds_and_nanos[1]


def _make_special(path: Path, entry: Entry, info: InodeDetails | None) -> None:
    if stat.S_ISSOCK(entry.mode):
        return
    device = os.makedev(*info.device) if info is not None and info.device else 0
    with _parent_times_kept(path):
        os.mknod(path, entry.mode, device)
    os.chown(path, entry.uid, entry.gid, follow_symlinks=False)
    os.chmod(path, stat.S_IMODE(entry.mode))


def _relink(paths: list[Path]) -> None:
    """rdump writes every name of a hard-linked file as its own copy; make them one inode."""
    first, *others = paths
    for other in others:
        with _parent_times_kept(other):
            other.unlink()
            os.link(first, other)


def _dig_holes(path: Path) -> None:
    times = path.stat()
    subprocess.run(["fallocate", "--dig-holes", str(path)], check=True)
    os.utime(path, ns=(times.st_atime_ns, times.st_mtime_ns))


@contextmanager
def _parent_times_kept(path: Path) -> Iterator[None]:
    """Changing a directory's entries bumps its mtime; put rdump's restored times back."""
    times = path.parent.stat()
    yield
    os.utime(path.parent, ns=(times.st_atime_ns, times.st_mtime_ns))


# ---------------------------------------------------------------- child processes


def _debugfs(device: str, cwd: Path, commands: list[str], *, code: str) -> bytes:
    """Run debugfs read-only; any complaint on stderr (beyond its banner) is a failure,
    because debugfs exits 0 even when a command failed."""
    result = subprocess.run(
        ["debugfs", "-f", "-", device],
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


def _run(args: list[str], *, env: dict[str, str] | None, code: str) -> bytes:
    result = subprocess.run(args, env=env, capture_output=True, check=False)
    if result.returncode != 0:
        detail = result.stderr.decode(errors="replace").strip() or f"exit {result.returncode}"
        raise ImageError(code, f"{args[0]} failed: {detail}")
    return result.stdout
