"""Processes seen from outside: alive or gone, and flooded with a signal."""

from __future__ import annotations

import contextlib
import os
import time


def alive(pid: int) -> bool:
    """Running (a zombie, exited and not yet reaped, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):  # gone before, or during
        return False


def gone(pid: int) -> bool:
    return not alive(pid)


def flood_until_gone(pid: int, signum: int, seconds: float, group: bool = False) -> None:
    """Send ``signum`` to ``pid`` (its process group with ``group``) as fast as this loop
    can for ``seconds``, or until it has gone: some signals land while the handler of
    the one before is still running, which is what a burst (Ctrl-C pressed twice, a
    group kill and a parent's kill together) does only sometimes."""
    kill = os.killpg if group else os.kill
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and alive(pid):
        for _ in range(50):
            with contextlib.suppress(ProcessLookupError):
                kill(pid, signum)
