"""Writing a bakeform's root from the image: directories, special files and all metadata
(extended attributes included) from debugfs' listing, ``stat`` and ``ea_get``, file data
copied straight from the raw image by block map with ``copy_file_range`` (large
in-kernel copies; ``debugfs rdump`` reads and writes 4 KiB at a time and took most of an
import), only symlinks and inline-data files through ``rdump``. Block maps are vetted
first (inside the filesystem, no block shared by two files), so a small image cannot
expand into a huge tree."""

from __future__ import annotations

import os
import stat
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import tools
from .errors import ImageError
from .ext4 import (
    EXT4_HUGE_FILE_FL,
    EXT4_INLINE_DATA_FL,
    InodeDetails,
    TreeEntry,
    corrupt,
    inode_details,
    list_root_tree,
    read_xattrs,
)
from .layout import Geometry, Partition, ext4_geometry

#: Threads copying root file data (the machines have 2 cores; rdump runs beside them).
COPY_THREADS = 2


def extract_root(raw: Path, partition: Partition, dest: Path) -> None:
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
        stat_job = pool.submit(inode_details, device, dest, entries)
        _make_directories(dest, entries)  # while debugfs runs
        details = stat_job.result()
    with raw.open("rb") as image, _scratch_dir(dest, entries) as scratch:
        details = read_xattrs(device, dest, scratch, details)
        image.seek(partition.offset + 1024)
        geometry = ext4_geometry(image.read(1024))
        plan = _plan_root(entries, details, geometry, partition.offset)
        _write_in_parallel(image.fileno(), dest, plan, device, scratch)
        _place_dumped(dest, scratch, plan.dumped, details)
    for names in plan.special:
        _make_special(dest, names, details[names[0].inode])
    _finish_directories(dest, entries, details)


@dataclass(frozen=True)
class FileCopy:
    """A regular file written from the image: (image offset, file offset, bytes) ranges."""

    names: list[TreeEntry]  # every name of the inode: the first is written, the others linked
    info: InodeDetails
    ranges: list[tuple[int, int, int]]


@dataclass(frozen=True)
class RootPlan:
    """How each non-directory inode of the root gets written."""

    copies: list[FileCopy]
    dumped: list[list[TreeEntry]]  # symlinks and files rdump writes
    special: list[list[TreeEntry]]  # fifos and device nodes, made with mknod


def _plan_root(
    entries: list[TreeEntry], details: dict[int, InodeDetails], geometry: Geometry, offset: int
) -> RootPlan:
    """Sort the inodes by how they are written, and refuse block maps that point outside
    the filesystem, share blocks between files (a way to multiply a small image into a
    huge tree) or files without a block map that claim more bytes than the filesystem."""
    names: dict[int, list[TreeEntry]] = defaultdict(list)
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
        corrupt(
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
    entry: TreeEntry, info: InodeDetails, geometry: Geometry, offset: int
) -> list[tuple[int, int, int]]:
    ranges = []
    size = geometry.block_size
    for run in info.runs or ():
        if run.physical + run.length > geometry.blocks or run.physical == 0:
            corrupt(
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
            corrupt(f"inodes {owner} and {inode} share block {physical}")
        end, owner = physical + length, inode


# ---------------------------------------------------------------- writing the root


def _make_directories(dest: Path, entries: list[TreeEntry]) -> None:
    """Breadth first, so parents come first; private until finished."""
    for entry in entries:
        if entry.path and stat.S_ISDIR(entry.mode):
            os.mkdir(_path(dest, entry), 0o700)


def _finish_directories(
    dest: Path, entries: list[TreeEntry], details: dict[int, InodeDetails]
) -> None:
    """Deepest first and after every entry exists, so the times set here stay."""
    for entry in reversed(entries):
        if stat.S_ISDIR(entry.mode):
            _set_metadata(_path(dest, entry), entry, details[entry.inode])


def _path(dest: Path, entry: TreeEntry) -> Path:
    return dest / os.fsdecode(entry.path) if entry.path else dest


@contextmanager
def _scratch_dir(dest: Path, entries: list[TreeEntry]) -> Iterator[str]:
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


def _rdump(device: str, dest: Path, scratch: str, dumped: list[list[TreeEntry]]) -> None:
    if dumped:
        commands = [f"rdump <{names[0].inode}> {scratch}" for names in dumped]
        tools.debugfs(device, dest, commands, code="extract_failed")


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
    dest: Path, scratch: str, dumped: list[list[TreeEntry]], details: dict[int, InodeDetails]
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
            _set_xattrs(path, first, info)
            os.utime(path, ns=_times(info), follow_symlinks=False)
        else:
            os.truncate(path, first.size)  # rdump writes inline data whole, whatever the size
            if info.blocks * 512 < first.size:
                tools.run(["fallocate", "--dig-holes", str(path)], env=None, code="extract_failed")
            _set_metadata(path, first, info)
        _link(path, dest, others)


def _make_special(dest: Path, names: list[TreeEntry], info: InodeDetails) -> None:
    first, *others = names
    path = _path(dest, first)
    os.mknod(path, first.mode, os.makedev(*info.device) if info.device else 0)
    _set_metadata(path, first, info)
    _link(path, dest, others)


def _set_metadata(target: int | Path, entry: TreeEntry, info: InodeDetails) -> None:
    """Owner first (chown clears setuid/setgid and file capabilities), then the whole
    mode, then the extended attributes (an ACL sets the group bits from its mask, as in
    the image), then the times."""
    os.chown(target, entry.uid, entry.gid)
    os.chmod(target, stat.S_IMODE(entry.mode))
    _set_xattrs(target, entry, info)
    os.utime(target, ns=_times(info))


def _set_xattrs(target: int | Path, entry: TreeEntry, info: InodeDetails) -> None:
    """Every extended attribute of the inode, on the inode itself (never a symlink's
    target); one the data dir's filesystem refuses fails the import, naming it: a root
    without its file capabilities or ACLs boots, but not as its image says."""
    for name, value in info.xattrs:
        try:
            if isinstance(target, int):
                os.setxattr(target, name, value)
            else:
                os.setxattr(target, name, value, follow_symlinks=False)
        except OSError as exc:
            raise ImageError(
                "extract_failed",
                f"the data dir cannot hold extended attribute {name} of "
                f"{os.fsdecode(entry.path) or '/'}: {exc.strerror}",
            ) from None


def _times(info: InodeDetails) -> tuple[int, int]:
    return _ns(info.atime), _ns(info.mtime)


def _ns(seconds_and_nanos: tuple[int, int]) -> int:
    return seconds_and_nanos[0] * 1_000_000_000 + seconds_and_nanos[1]


def _link(path: Path, dest: Path, others: list[TreeEntry]) -> None:
    for other in others:
        os.link(path, _path(dest, other), follow_symlinks=False)
