"""The programs an import runs (mtools, debugfs, fallocate): argument lists only, and
every failure an ImageError with the program's own explanation."""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path

from .errors import ImageError


def debugfs(device: str, cwd: Path, commands: list[str], *, code: str) -> bytes:
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


def run(args: list[str], *, env: dict[str, str] | None, code: str) -> bytes:
    result = subprocess.run(args, env=env, capture_output=True, check=False)
    if result.returncode != 0:
        detail = result.stderr.decode(errors="replace").strip() or f"exit {result.returncode}"
        raise ImageError(code, f"{args[0]} failed: {detail}")
    return result.stdout
