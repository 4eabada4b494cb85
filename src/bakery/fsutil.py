"""The file helpers every part of Bakery needs, written once.

- ``locked``: a cross-process ``flock`` (gunicorn workers, the TFTP server and the CLI
  all share one data directory);
- ``write_atomically``: replace a file so a reader sees the old or the new one, whole,
  even after a power cut (fsync before and after the rename);
- ``reflink``: ``FICLONE``, sharing one file's extents with another (btrfs, xfs);
- ``run``: a command with an argument list, its stderr turned into the error message;
- ``staging_name``/``trash_name``: the hidden names half-made and half-deleted trees
  carry, so listings and recovery tell them from finished ones;
- ``remove``: delete a file or a tree without following a symlink.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
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


def reflink(source_fd: int, target_fd: int) -> None:
    """Make ``target_fd`` share every extent of ``source_fd``; OSError where the
    filesystem cannot (EOPNOTSUPP, EXDEV, EINVAL...)."""
    fcntl.ioctl(target_fd, FICLONE, source_fd)


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
        shutil.rmtree(path)
