"""Cloning and deleting roots: a btrfs snapshot (constant time), an xfs/btrfs reflink copy
(metadata only) or, elsewhere, the parallel faithful copy of ``copier``."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal, get_args

from .. import fsutil
from .copier import copy_tree
from .errors import RootError

CloneMethod = Literal["snapshot", "reflink", "copy"]
CLONE_METHODS: tuple[CloneMethod, ...] = get_args(CloneMethod)

#: Inode number of the top directory of every btrfs subvolume (BTRFS_FIRST_FREE_OBJECTID).
BTRFS_SUBVOLUME_INODE = 256


# --- which clone the filesystem allows ------------------------------------------------------


def clone_method_for(path: Path) -> CloneMethod:
    """The cheapest clone of `path` (existing or about to be created) its filesystem allows.

    On btrfs a snapshot needs `path` to be a subvolume: an existing plain directory there
    gets reflink copies instead.
    """
    probe_dir = _nearest_existing_dir(path)
    if _filesystem_type(probe_dir) == "btrfs":
        if not os.path.lexists(path) or _is_subvolume(path):
            return "snapshot"
        return "reflink"
    return "reflink" if _reflink_works(probe_dir) else "copy"


def create_base(path: Path) -> CloneMethod:
    """Create `path` as an empty directory a bakeform's root tree is then extracted into.

    On btrfs it is a subvolume, so that every bake of it can be a snapshot. Returns the
    method bakes of this base will use.
    """
    if os.path.lexists(path):
        raise FileExistsError(errno.EEXIST, "base already exists", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    method = clone_method_for(path)
    if method == "snapshot":
        _run(["btrfs", "subvolume", "create", str(path)])
    else:
        path.mkdir(mode=0o755)
    return method


def _nearest_existing_dir(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(errno.ENOENT, "no existing directory above", str(path))


def _filesystem_type(path: Path) -> str:
    return _run(["stat", "--file-system", "--format=%T", str(path)])


def _is_subvolume(path: Path) -> bool:
    return _has_subvolume_inode(path) and _filesystem_type(path) == "btrfs"


def _has_subvolume_inode(path: Path) -> bool:
    """True for every btrfs subvolume; elsewhere any directory may have this inode, so
    the filesystem must be known to be btrfs."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_ino == BTRFS_SUBVOLUME_INODE


def _reflink_works(directory: Path) -> bool:
    """Try a reflink on a probe file: the only reliable answer (xfs may be made without
    reflink, and other filesystems gain it over time)."""
    with tempfile.TemporaryDirectory(prefix=".bakery-reflink-probe-", dir=directory) as tmp:
        source, target = Path(tmp, "source"), Path(tmp, "target")
        source.write_bytes(b"\0" * 4096)
        with open(source, "rb") as src, open(target, "wb") as dst:
            try:
                fsutil.reflink(src.fileno(), dst.fileno())
            except OSError:
                return False
    return True


# --- cloning and deleting -------------------------------------------------------------------


def clone_root(base: Path, dest: Path, method: CloneMethod) -> None:
    """Make `dest` (which must not exist) a writable copy of `base` using `method`.

    Copies are made under a hidden sibling name and renamed into place, so `dest` either
    is a complete clone or does not exist, even after a crash half-way.
    """
    if method not in CLONE_METHODS:
        raise ValueError(f"unknown clone method {method!r}")
    if os.path.lexists(dest):
        raise FileExistsError(errno.EEXIST, "clone destination already exists", str(dest))
    if method == "snapshot":
        _run(["btrfs", "subvolume", "snapshot", str(base), str(dest)])
        return
    staging = dest.with_name(fsutil.staging_name())
    try:
        if method == "reflink":
            _reflink_tree(base, staging)
        else:
            copy_tree(base, staging)
        os.rename(staging, dest)
    except BaseException:
        delete_tree(staging)
        raise


def _reflink_tree(source: Path, target: Path) -> None:
    """``cp -a --reflink``: keeps owners, modes, times, symlinks as they are, hard links,
    holes, xattrs and ACLs, and shares the data extents instead of copying them."""
    _run(
        [
            "cp",
            "--archive",
            "--no-target-directory",
            "--reflink=always",
            "--",
            str(source),
            str(target),
        ]
    )


def clone_boot(source: Path, dest: Path) -> None:
    """Give a bake its own copy of its bakeform's boot files (``dest`` must not exist).

    Hard links where both sides share a filesystem: a bakeform's files are never changed
    in place (replacing a bakeform swaps its whole directory), so the links cost no space
    and a live bake keeps booting the kernel and firmware that match its root after its
    bakeform is replaced. A copy where links cannot reach (another filesystem, another
    bind mount of the same one)."""
    if os.path.lexists(dest):
        raise FileExistsError(errno.EEXIST, "boot files destination already exists", str(dest))

    def cp(*options: str) -> None:
        _run(["cp", "--archive", *options, "--no-target-directory", "--", str(source), str(dest)])

    try:
        cp("--link")
    except RootError:
        delete_tree(dest)
        cp()


def delete_tree(path: Path) -> None:
    """Remove a root, whatever clone made it; a missing `path` is already deleted.

    Subvolumes are dropped with ``btrfs subvolume delete`` (instant, even for a snapshot
    of a full OS); any other tree is removed without ever following a symlink.
    """
    if not os.path.lexists(path):
        return
    if _is_subvolume(path):
        _delete_subvolume(path)
    else:
        fsutil.remove(path)


def _delete_subvolume(path: Path) -> None:
    """btrfs refuses to delete a subvolume holding another one, so on that refusal the
    nested ones (e.g. made by software inside the bake) are deleted first."""
    try:
        _run(["btrfs", "subvolume", "delete", str(path)])
        return
    except RootError:
        nested = list(_nested_subvolumes(path))
        if not nested:
            raise
    for subvolume in reversed(nested):
        _run(["btrfs", "subvolume", "delete", str(subvolume)])
    _run(["btrfs", "subvolume", "delete", str(path)])


def _nested_subvolumes(path: Path) -> Iterator[Path]:
    """Subvolumes below the subvolume `path`, parents before children; symlinks are not
    followed. A loop over a stack, not os.walk's recursion: a bake's root is as deep as
    its Pi made it."""
    pending = [path]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if not entry.is_dir(follow_symlinks=False):
                    continue
                candidate = Path(entry.path)
                if _has_subvolume_inode(candidate):
                    yield candidate
                pending.append(candidate)


def _run(args: list[str]) -> str:
    try:
        return fsutil.run(args).decode().strip()
    except fsutil.CommandFailed as exc:
        raise RootError(str(exc)) from None
