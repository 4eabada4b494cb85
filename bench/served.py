"""What the benchmarks that time ``bakery serve`` share: a data dir on btrfs where the
machine allows (root and btrfs-progs), and the server on SQLite with the power-on gap off."""

from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from tests.support.loopfs import loop_filesystem, missing_tools

from bakery.sim.server import BakeryProcess


def data_dir(stack: ExitStack, workdir: Path) -> tuple[Path, str]:
    """btrfs as root (snapshots), else a directory of the temp filesystem (copies)."""
    if os.geteuid() == 0 and not missing_tools("btrfs"):
        return stack.enter_context(loop_filesystem("btrfs", 2048, workdir)) / "data", "btrfs"
    return workdir / "data", "temp dir (copy; run as root for btrfs)"


def start_bakery(stack: ExitStack, workdir: Path, root: Path, **settings: Any) -> BakeryProcess:
    """``bakery serve`` on ``root`` (2 workers, ganesha-style exports file), stopped with
    ``stack``; ``settings`` override the defaults."""
    config = {
        "root": str(root),
        "database_url": f"sqlite:///{workdir / 'bakery.db'}",
        "workers": 2,
        "power_on_gap": 0,
        "nfs_backend": "ganesha",
        "exports_file": str(workdir / "exports.conf"),
        "log_level": "WARNING",
        **settings,
    }
    server = BakeryProcess(config, workdir)
    stack.callback(server.stop)
    return server.start()
