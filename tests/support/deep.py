"""Trees deeper than a path can name: what a hostile image or a Pi's own writes make."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from bakery.sim.image import FIRST_SECTOR, MIB, SECTOR, build_sd_image

#: A name long enough that a couple of dozen levels already pass PATH_MAX (4096).
LONG_NAME = "d" * 200


def make_deep_chain(top: Path, depth: int, name: str = LONG_NAME) -> None:
    """``depth`` nested directories ``name`` under ``top`` (made if missing), each holding
    a file, made relative to open directories (their paths are too long for any path
    call)."""
    top.mkdir(parents=True, exist_ok=True)
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir(name, dir_fd=fd)
            child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
            os.close(os.open("file", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
    finally:
        os.close(fd)


def deep_root_image(path: Path, depth: int) -> Path:
    """An SD image whose root holds a chain of ``depth`` directories ``d``, written into
    the ext4 with debugfs (mkfs.ext4 -d itself fails on such trees)."""
    build_sd_image(path)
    root = f"{path}?offset={FIRST_SECTOR * SECTOR + 64 * MIB}"
    commands = "".join("mkdir d\ncd d\n" for _ in range(depth))
    subprocess.run(
        ["debugfs", "-w", "-f", "-", root], input=commands, text=True, check=True,
        capture_output=True,
    )  # fmt: skip
    return path
