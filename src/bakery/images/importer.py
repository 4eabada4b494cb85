"""``import_image``: receive an upload into a staging directory, check its layout, and
extract boot and root in parallel; on failure the staging directory is put back as it
was."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .. import fsutil
from .fat import extract_boot, read_cmdline
from .layout import Layout, read_layout
from .receive import HASH_LAG, InBackground, receive
from .rootwriter import extract_root

RAW_NAME = ".upload.img"


@dataclass(frozen=True)
class ImportedImage:
    sha256: str  # of the bytes received (as uploaded, compressed or not)
    size: int  # bytes received
    image_size: int  # bytes of the raw image
    compression: str  # "none" | "xz" | "gz", from magic bytes
    cmdline: str  # the boot partition's cmdline.txt, stripped ("" if absent)


def import_image(
    stream: IO[bytes],
    staging: Path,
    *,
    max_bytes: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> ImportedImage:
    """Receive ``stream``, validate it and extract it into ``staging/boot`` and ``staging/root``.

    ``staging/root`` must exist and be empty (it may be a btrfs subvolume, so it is filled,
    never recreated). On failure ``staging`` is put back as it was (only the empty
    ``root``), no child process is left running, and ImageError says why.
    """
    raw = staging / RAW_NAME
    digest = hashlib.sha256()
    try:
        # The hash may trail the write by HASH_LAG and finish while extraction starts.
        with InBackground(digest.update, depth=HASH_LAG) as hash_chunk:
            size, compression = receive(stream, raw, hash_chunk, max_bytes, progress)
            image_size = raw.stat().st_size
            layout = read_layout(raw)
            cmdline = _extract(raw, layout, staging)
    except BaseException:
        _reset_staging(staging)
        raise
    finally:
        raw.unlink(missing_ok=True)
    return ImportedImage(digest.hexdigest(), size, image_size, compression, cmdline)


def _reset_staging(staging: Path) -> None:
    fsutil.remove(staging / "boot")
    for child in (staging / "root").iterdir():
        fsutil.remove(child)


def _extract(raw: Path, layout: Layout, staging: Path) -> str:
    """Boot and root in parallel (each is one child process most of the time)."""
    boot_dir = staging / "boot"
    boot_dir.mkdir()
    with ThreadPoolExecutor(max_workers=2) as pool:
        boot = pool.submit(extract_boot, raw, layout.boot, boot_dir)
        root = pool.submit(extract_root, raw, layout.root, staging / "root")
        errors = [f.exception() for f in (boot, root)]
    for error in errors:
        if error is not None:
            raise error
    return read_cmdline(boot_dir)
