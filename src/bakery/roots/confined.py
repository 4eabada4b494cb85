"""Reading and writing inside a root that came from an uploaded image: every path is
walked one component at a time with ``O_NOFOLLOW``, so a symlink planted in the image can
never redirect a write (or a read) onto the host."""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .. import fsutil
from .errors import SeasoningError

MAX_READ_BYTES = 1024 * 1024


NOFOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def path_parts(relpath: str) -> list[str]:
    """The components of a path inside the root; ``..`` and ``.`` are refused outright."""
    parts = [part for part in relpath.split("/") if part]
    if not parts or any(part in (".", "..") for part in parts):
        raise SeasoningError(f"{relpath!r} is not a plain path inside the root")
    return parts


@contextmanager
def open_in_root(root: Path, reldir: str, *, create: bool = False) -> Iterator[int]:
    """Yield a descriptor of directory `reldir` of `root`, never leaving the root.

    Each component is opened relative to the previous one with ``O_NOFOLLOW``, so a
    symlink anywhere on the way (``/etc`` -> the host's ``/etc``) is refused with
    SeasoningError instead of being followed. Missing directories are made if `create`.
    """
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in path_parts(reldir) if reldir.strip("/") else []:
            child = _open_child_dir(fd, part, create=create, where=f"{reldir} in {root}")
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def _open_child_dir(parent_fd: int, name: str, *, create: bool, where: str) -> int:
    created = False
    if create:
        try:
            os.mkdir(name, 0o755, dir_fd=parent_fd)
            created = True
        except FileExistsError:
            pass
    try:
        fd = os.open(name, NOFOLLOW_DIR, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise SeasoningError(f"{name!r} ({where}) is a symlink or not a directory") from None
        raise
    if created:
        os.fchmod(fd, 0o755)  # the Pi's users enter it, whatever Bakery's own umask
    return fd


def write_in_root(
    root: Path, relpath: str, data: bytes, *, mode: int = 0o644, uid: int = 0, gid: int = 0
) -> None:
    """Make `relpath` of `root` a regular file holding `data`, owned by `uid`:`gid`.

    The file is written under a temporary name and renamed over the old entry, so an
    old symlink at `relpath` is replaced, never followed, and no existing inode (which
    could be hard-linked elsewhere in the tree) is modified. A regular file it replaces
    passes its extended attributes on (an SELinux label, an ACL), as an edit in place
    would keep them.
    """
    parts = path_parts(relpath)
    with open_in_root(root, "/".join(parts[:-1]), create=True) as dir_fd:
        temp_name = f".{parts[-1]}.bakery-{secrets.token_hex(4)}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(temp_name, flags, 0o600, dir_fd=dir_fd)
        try:
            with os.fdopen(fd, "wb") as temp:
                temp.write(data)
                os.fchown(temp.fileno(), uid, gid)
                os.fchmod(temp.fileno(), mode)
                _pass_on_xattrs(parts[-1], dir_fd, temp.fileno())
            _rename_over(temp_name, parts[-1], dir_fd)
        except BaseException:
            os.unlink(temp_name, dir_fd=dir_fd)
            raise


def _pass_on_xattrs(name: str, dir_fd: int, target: int) -> None:
    """Copy the xattrs of regular file ``name`` (if there is one) onto ``target``, by a
    path through the directory's descriptor: the old file is never opened, so a device
    node swapped in meanwhile is not either, and its last component is not followed."""
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISREG(info.st_mode):
        fsutil.copy_xattrs(f"/proc/self/fd/{dir_fd}/{name}", target)


def _rename_over(temp_name: str, name: str, dir_fd: int) -> None:
    try:
        os.rename(temp_name, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except (IsADirectoryError, OSError) as exc:
        if exc.errno not in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
            raise
        raise SeasoningError(f"{name!r} is a directory in the image, not a file") from None


def symlink_in_root(root: Path, relpath: str, target: str) -> None:
    """Make `relpath` of `root` a symlink to `target`, like `write_in_root` does for
    files: made under a temporary name and renamed over the old entry, so an existing
    symlink or file is replaced and never followed; a directory there is refused."""
    parent, _, name = relpath.strip("/").rpartition("/")
    if name in ("", ".", ".."):
        raise SeasoningError(f"{relpath!r} is not a plain path inside the root")
    with open_in_root(root, parent, create=True) as dir_fd:
        temp_name = f".{name}.bakery-{secrets.token_hex(4)}"
        os.symlink(target, temp_name, dir_fd=dir_fd)
        try:
            os.rename(temp_name, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except OSError as exc:
            os.unlink(temp_name, dir_fd=dir_fd)
            if exc.errno not in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                raise
            raise SeasoningError(f"{relpath!r} is a directory in the image") from None


def read_in_root(root: Path, relpath: str) -> bytes | None:
    """The contents of `relpath` if it is a regular file of the root, else None.

    A symlink is treated as absent: following it could read a host file (``/etc/shadow``)
    and copy it into a root its uploader can read. Device nodes and FIFOs are not even
    opened.
    """
    parts = path_parts(relpath)
    try:
        with open_in_root(root, "/".join(parts[:-1])) as dir_fd:
            if not stat.S_ISREG(os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False).st_mode):
                return None
            fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as file:
        data = file.read(MAX_READ_BYTES + 1)
    if len(data) > MAX_READ_BYTES:
        raise SeasoningError(f"{relpath} in {root} is larger than {MAX_READ_BYTES} bytes")
    return data


def is_regular_file(root: Path, relpath: str) -> bool:
    parts = path_parts(relpath)
    try:
        with open_in_root(root, "/".join(parts[:-1])) as dir_fd:
            info = os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return stat.S_ISREG(info.st_mode)
