"""The programs an import runs (mtools, debugfs, fallocate): argument lists only, and
every failure an ImageError with the program's own explanation. ``run_debugfs`` also
serves the stemcell build, which writes with it."""

from __future__ import annotations

import functools
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .. import fsutil
from .errors import ImageError


@dataclass(frozen=True)
class DebugfsOutput:
    output: bytes
    #: What debugfs said on stderr beyond its banner: it exits 0 even when a command failed.
    complaints: list[str]


def run_debugfs(
    device: str, cwd: Path, commands: list[str], *, write: bool = False
) -> DebugfsOutput:
    """Run ``commands`` in one debugfs on ``device`` (paths relative to ``cwd``: debugfs
    splits its command lines at blanks); CommandFailed if it exits non-zero."""
    stdin = "\n".join(commands).encode() + b"\n"
    mode = ["-w"] if write else []
    result = subprocess.run(
        [*_without_fsync(), "debugfs", *mode, "-f", "-", device],
        input=stdin,
        cwd=cwd,
        capture_output=True,
        check=False,
    )
    complaints = [
        line
        for line in result.stderr.decode(errors="replace").splitlines()
        if line.strip() and not line.startswith("debugfs ")
    ]
    if result.returncode != 0:
        raise fsutil.CommandFailed(
            ["debugfs"], "; ".join(complaints[:3]) or f"exit {result.returncode}"
        )
    return DebugfsOutput(result.stdout, complaints)


def debugfs(device: str, cwd: Path, commands: list[str], *, code: str) -> bytes:
    """Read the root filesystem with debugfs; any complaint is a failure."""
    try:
        done = run_debugfs(device, cwd, commands)
    except fsutil.CommandFailed as exc:
        raise ImageError(code, f"reading the root filesystem failed: {exc.detail}") from None
    if done.complaints:
        detail = "; ".join(done.complaints[:3])
        raise ImageError(code, f"reading the root filesystem failed: {detail}")
    return done.output


@functools.cache
def _without_fsync() -> list[str]:
    """The prefix that makes debugfs' exit-time fsync a no-op, where eatmydata is
    installed (see the module docstring)."""
    return ["eatmydata"] if shutil.which("eatmydata") else []


def run(args: list[str], *, env: dict[str, str] | None, code: str) -> bytes:
    try:
        return fsutil.run(args, env=env)
    except fsutil.CommandFailed as exc:
        raise ImageError(code, f"{exc.program} failed: {exc.detail}") from None
