"""Copying a tree where nothing can be shared: as faithful as ``cp -a``, faster, and never
following a symlink of the (uploaded, hostile) source."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypedDict

from .. import fsutil
from .errors import RootError

#: Threads copying file contents. ``sendfile`` runs without the GIL, so several files are
#: read and written at once: with cold caches the disk, not one thread's read-then-write,
#: sets the pace (rsync gets two, its sender and receiver; `cp -a` one). More than 4 did
#: not measure faster on 2 cores.
COPY_THREADS = 4
#: Regular files handed to a copy thread at a time: few hand-overs, yet small enough that
#: the threads stay balanced by bytes whatever mix of small and large files the root has.
COPY_BATCH_FILES = 64
COPY_BATCH_BYTES = 16 * 1024 * 1024
#: Largest single ``sendfile`` call.
COPY_CHUNK_BYTES = 64 * 1024 * 1024

#: A file of the source tree: its path, its path in the copy, and its ``lstat``.
_Item = tuple[str, str, os.stat_result]


def copy_tree(source: Path, target: Path) -> None:
    """A copy as faithful as ``cp -a`` (owners, modes with setuid/sticky bits, nanosecond
    times, symlinks as they are, hard links, holes, FIFOs and device nodes, xattrs and so
    ACLs and file capabilities), but faster: file contents are copied by several threads
    while the tree is still being walked.

    The source is an uploaded image: no symlink in it is ever followed, and every entry of
    the copy is created fresh (``O_EXCL``) in directories this copy made.
    """
    try:
        _TreeCopy(str(source), str(target)).run()
    except OSError as exc:
        raise RootError(f"copying {source} to {target}: {exc}") from exc


class _TreeCopy:
    """One copy of `source` to `target`: directories are made as the walk finds them,
    regular files go to the copy threads, and whatever must wait for those (symlinks and
    special files, then further names of any inode already copied, then every directory's
    own metadata, bottom-up so that filling a directory cannot change its times) is
    collected for afterwards."""

    def __init__(self, source: str, target: str) -> None:
        self.source, self.target = source, target
        self.directories: list[_Item] = []
        self.symlinks: list[_Item] = []
        self.specials: list[_Item] = []
        self.hard_links: list[tuple[str, str]] = []
        self.first_copies: dict[tuple[int, int], str] = {}

    def run(self) -> None:
        top = os.lstat(self.source)  # before the walk reads it and moves its atime
        if not stat.S_ISDIR(top.st_mode):
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", self.source)
        os.mkdir(self.target, 0o700)
        _drop_inherited_acls(self.target)
        with ThreadPoolExecutor(COPY_THREADS, thread_name_prefix="bakery-copy") as pool:
            try:
                copies = [pool.submit(_copy_regular_files, batch) for batch in self._walk()]
                for copy in copies:
                    copy.result()
            except BaseException:
                pool.shutdown(cancel_futures=True)
                raise
        for source, target, info in self.symlinks:
            os.symlink(os.readlink(source), target)
            _apply_metadata(source, target, info)
        for source, target, info in self.specials:
            os.mknod(target, info.st_mode, info.st_rdev)
            _apply_metadata(source, target, info)
        for existing, link in self.hard_links:
            os.link(existing, link, follow_symlinks=False)
        for source, target, info in reversed(self.directories):
            _apply_metadata(source, target, info)
        _apply_metadata(self.source, self.target, top)

    def _walk(self) -> Iterator[list[_Item]]:
        """Batches of regular files to copy, yielded while the walk goes on; directories
        are made as they are found, so a batch's files always have their directory."""
        batch: list[_Item] = []
        batch_bytes = 0
        pending = [(self.source, self.target)]
        while pending:
            for item in self._scan(*pending.pop()):
                source, target, info = item
                if stat.S_ISDIR(info.st_mode):
                    os.mkdir(target, 0o700)
                    self.directories.append(item)
                    pending.append((source, target))
                elif self._is_another_link(target, info):
                    continue
                elif stat.S_ISREG(info.st_mode):
                    batch.append(item)
                    batch_bytes += info.st_size
                    if len(batch) >= COPY_BATCH_FILES or batch_bytes >= COPY_BATCH_BYTES:
                        yield batch
                        batch, batch_bytes = [], 0
                elif stat.S_ISLNK(info.st_mode):
                    self.symlinks.append(item)
                else:
                    self.specials.append(item)
        if batch:
            yield batch

    @staticmethod
    def _scan(source_dir: str, target_dir: str) -> list[_Item]:
        """The entries of one directory, in inode order: on ext4 that is roughly the
        order of the inodes (and often the data) on disk, so reads seek less."""
        with os.scandir(source_dir) as entries:
            items = [
                (
                    entry.path,
                    os.path.join(target_dir, entry.name),
                    entry.stat(follow_symlinks=False),
                )
                for entry in entries
            ]
        items.sort(key=lambda item: item[2].st_ino)
        return items

    def _is_another_link(self, target: str, info: os.stat_result) -> bool:
        """True if `info` is an inode already met under another name: `target` is then
        made a hard link to that name's copy, once the copy exists."""
        if info.st_nlink < 2:
            return False
        key = (info.st_dev, info.st_ino)
        existing = self.first_copies.setdefault(key, target)
        if existing == target:
            return False
        self.hard_links.append((existing, target))
        return True


def _drop_inherited_acls(directory: str) -> None:
    """A new directory inherits its parent's default ACL (and passes it on to everything
    made in it); the copy must have the source's ACLs only, which come last."""
    for name in fsutil.xattr_names(directory):
        if name.startswith("system.posix_acl_"):
            os.removexattr(directory, name)


def _copy_regular_files(batch: list[_Item]) -> None:
    for source, target, info in batch:
        _copy_regular_file(source, target, info)


def _copy_regular_file(source: str, target: str, info: os.stat_result) -> None:
    source_fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        target_fd = os.open(target, flags, 0o600)
        try:
            _copy_contents(source_fd, target_fd, info)
            _apply_metadata(source_fd, target_fd, info)
        finally:
            os.close(target_fd)
    finally:
        os.close(source_fd)


def _copy_contents(source_fd: int, target_fd: int, info: os.stat_result) -> None:
    """Copy in the kernel; a file with fewer blocks than its size has holes, and only
    its data ranges (``SEEK_DATA``/``SEEK_HOLE``) are copied so the holes stay holes."""
    if info.st_blocks * 512 >= info.st_size:
        _copy_range(source_fd, target_fd, 0, info.st_size)
        return
    offset = 0
    while offset < info.st_size:
        try:
            data = os.lseek(source_fd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # no data after offset: the rest is a hole
                raise
            break
        offset = os.lseek(source_fd, data, os.SEEK_HOLE)
        _copy_range(source_fd, target_fd, data, offset - data)
    os.ftruncate(target_fd, info.st_size)


def _copy_range(source_fd: int, target_fd: int, offset: int, length: int) -> None:
    """``sendfile`` rather than ``copy_file_range``: as fast (on a filesystem without
    reflinks both are the kernel's splice) and it also works across filesystems."""
    os.lseek(target_fd, offset, os.SEEK_SET)
    end = offset + length
    while offset < end:
        copied = os.sendfile(target_fd, source_fd, offset, min(end - offset, COPY_CHUNK_BYTES))
        if copied == 0:  # the source shrank while being copied
            return
        offset += copied


class _NoFollow(TypedDict, total=False):
    """The keyword arguments that keep os calls off a symlink's target."""

    follow_symlinks: bool


def _apply_metadata(source: str | int, target: str | int, info: os.stat_result) -> None:
    """Give `target` the owner, xattrs, mode and times of `source`, in the only order that
    keeps them all: chown clears setuid bits and file capabilities, and every change but
    the times' own moves the times. Symlinks are never followed (and have no mode)."""
    is_symlink = stat.S_ISLNK(info.st_mode)
    nofollow: _NoFollow = {"follow_symlinks": False} if is_symlink else {}
    os.chown(target, info.st_uid, info.st_gid, **nofollow)
    fsutil.copy_xattrs(source, target)
    if not is_symlink:
        os.chmod(target, stat.S_IMODE(info.st_mode))
    os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns), **nofollow)
