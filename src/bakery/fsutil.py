"""The file helpers every part of Bakery needs, written once.

- ``locked``: a cross-process ``flock`` (gunicorn workers, the TFTP server and the CLI
  all share one data directory);
- ``write_atomically``: replace a file so a reader sees the old or the new one, whole,
  even after a power cut (fsync before and after the rename);
- ``make_once``: create a file (a key, a secret) unless it exists, never over one another
  process made at the same moment;
- ``reflink``: ``FICLONE``, sharing one file's extents with another (btrfs, xfs);
- ``copy_xattrs``: every extended attribute of one inode onto another (ACLs and file
  capabilities are xattrs too);
- ``run``: a command with an argument list, its stderr turned into the error message;
- ``staging_name``/``trash_name``: the hidden names half-made and half-deleted trees
  carry, so listings and recovery tell them from finished ones;
- ``remove``: delete a file or a tree, however deep, without following a symlink.
"""

from __future__ import annotations

import errno
import fcntl
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from . import identifiers

#: ioctl(2) that shares all extents of one file with another (linux/fs.h), what
#: ``cp --reflink`` uses.
FICLONE = 0x40049409
#: Prefixes of trees being made and being deleted; never a bakeform, bake or disk id.
STAGING_PREFIX = ".incoming-"
TRASH_PREFIX = ".trash-"


class CommandFailed(RuntimeError):
    """A command exited non-zero or is not installed; ``detail`` is what it said on
    stderr (or its exit status), ``program`` its name."""

    def __init__(self, args: Sequence[str], detail: str) -> None:
        self.program = args[0]
        self.detail = detail
        super().__init__(f"{' '.join(args)}: {detail}")


@contextmanager
def locked(path: Path, *, shared: bool = False) -> Iterator[None]:
    """Hold an ``flock`` on ``path`` (made if missing): many ``shared`` holders at once,
    or one exclusive, across every process and thread of this host."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write_atomically(path: Path, data: str | bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` so a reader (an NFS server, dnsmasq, another bakery process) sees
    the old or the new file, whole.

    The data is fsynced before the rename and the directory after it, so a power cut
    cannot leave an empty file where an exports list or a configuration was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data.encode() if isinstance(data, str) else data)
            stream.flush()
            os.fchmod(stream.fileno(), mode)
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def make_once(path: Path, make: Callable[[Path], object], *, mode: int = 0o600) -> None:
    """Create ``path`` with ``make`` (which writes the file it is given) unless it exists.

    ``make`` writes a staging file beside ``path``, which is then hard-linked into place:
    two processes starting at once (gunicorn workers) both make one, and the first link
    wins, so they all use the same file, and none ever sees it half-written."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(staging_name())
    try:
        make(staging)
        os.chmod(staging, mode)
        os.link(staging, path)
    except FileExistsError:
        pass
    finally:
        staging.unlink(missing_ok=True)


def reflink(source_fd: int, target_fd: int) -> None:
    """Make ``target_fd`` share every extent of ``source_fd``; OSError where the
    filesystem cannot (EOPNOTSUPP, EXDEV, EINVAL...)."""
    fcntl.ioctl(target_fd, FICLONE, source_fd)


def copy_xattrs(source: int | str | Path, target: int | str | Path) -> None:
    """Every xattr of ``source`` onto ``target`` (descriptors, or paths whose symlinks are
    not followed); one the target's filesystem cannot hold (``ENOTSUP``) is left out, as
    ``cp -a`` does. Set after the owner: chown clears file capabilities."""
    for name in xattr_names(source):
        value = os.getxattr(source, name, follow_symlinks=_follows(source))
        try:
            os.setxattr(target, name, value, follow_symlinks=_follows(target))
        except OSError as exc:
            if exc.errno != errno.ENOTSUP:
                raise


def xattr_names(path: int | str | Path) -> list[str]:
    """The xattrs of ``path`` itself (a symlink's own); none where the filesystem has none."""
    try:
        return os.listxattr(path, follow_symlinks=_follows(path))
    except OSError as exc:
        if exc.errno != errno.ENOTSUP:
            raise
        return []


def _follows(path: int | str | Path) -> bool:
    """``follow_symlinks`` for the ``os`` xattr calls: False for a path (a symlink's own
    xattrs); a descriptor is its inode already, and refuses False."""
    return isinstance(path, int)


def run(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
    cwd: Path | None = None,
    stdin: IO[bytes] | None = None,
    stdout: IO[bytes] | int = subprocess.PIPE,
) -> bytes:
    """Run ``args`` (never through a shell) and return its stdout (``b""`` when it goes
    to a file); CommandFailed with its stderr when it exits non-zero or is missing."""
    try:
        result = subprocess.run(
            list(args),
            env=env,
            input=input,
            cwd=cwd,
            stdin=stdin,
            stdout=stdout,
            stderr=subprocess.PIPE,
            check=False,
        )
    except FileNotFoundError:
        raise CommandFailed(args, "not found: install it") from None
    if result.returncode != 0:
        stderr = result.stderr.decode(errors="replace").strip()
        raise CommandFailed(args, stderr or f"exit {result.returncode}")
    return result.stdout or b""


def staging_name() -> str:
    """A fresh name for a tree being made beside the one it will become."""
    return f"{STAGING_PREFIX}{identifiers.new_id()}"


def trash_name() -> str:
    """A fresh name for a tree moved aside to be deleted."""
    return f"{TRASH_PREFIX}{identifiers.new_id()}"


def strays(directory: Path, known: set[str]) -> list[Path]:
    """The entries of ``directory`` whose names are not in ``known``: what a crash left
    (a staging or trash tree, a bake or disk no row owns). None if it does not exist."""
    if not directory.is_dir():
        return []
    return [path for path in directory.iterdir() if path.name not in known]


def remove(path: Path) -> None:
    """Delete a file, symlink or directory tree; a missing ``path`` is already gone.
    A symlink is removed itself, never followed."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        path.unlink()
    elif path.is_dir():
        _remove_tree(path)


@dataclass
class _Level:
    """A directory on the way down: who it is, and its subdirectories still to delete."""

    identity: tuple[int, int]
    name: str  # of the child being deleted, in this directory
    subdirs: list[str]


def _remove_tree(top: Path) -> None:
    """Delete the tree at ``top``, however deep (a Pi writes what it likes into its root).

    A loop, not recursion: no recursion limit. Every step is relative to an open
    directory, never a path, so no path grows past PATH_MAX, and at most two directories
    are open at once. Going back up through ``..`` is checked against the directory
    that was come down from, so a tree moved meanwhile stops the deletion rather than
    making it delete elsewhere."""
    fd = _open_subdir(str(top), None)
    levels: list[_Level] = []
    try:
        subdirs = _unlink_files(fd)
        while subdirs or levels:
            if subdirs:
                name = subdirs.pop()
                try:
                    child = _open_subdir(name, fd)
                except FileNotFoundError:  # gone meanwhile: already deleted
                    continue
                levels.append(_Level(_identity(fd), name, subdirs))
                os.close(fd)
                fd = child
                subdirs = _unlink_files(fd)
                continue
            level = levels.pop()
            parent = _open_subdir("..", fd)
            os.close(fd)
            fd = parent
            if _identity(fd) != level.identity:
                raise OSError(errno.EBUSY, "tree moved while being deleted", str(top))
            os.rmdir(level.name, dir_fd=fd)
            subdirs = level.subdirs
    finally:
        os.close(fd)
    os.rmdir(top)


def _open_subdir(name: str, dir_fd: int | None) -> int:
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    return os.open(name, flags if name == ".." else flags | os.O_NOFOLLOW, dir_fd=dir_fd)


def _identity(fd: int) -> tuple[int, int]:
    info = os.fstat(fd)
    return info.st_dev, info.st_ino


def _unlink_files(fd: int) -> list[str]:
    """Unlink everything in the directory ``fd`` but its subdirectories; return those."""
    subdirs = []
    with os.scandir(fd) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                subdirs.append(entry.name)
            else:
                with suppress(FileNotFoundError):
                    os.unlink(entry.name, dir_fd=fd)
    return subdirs
