"""The FAT boot partition, read with mtools (user space): listed and vetted first, then
copied whole into the bakeform's ``boot/``."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ImageError
from .layout import SECTOR, Partition
from .tools import run

#: How every mtools call in Bakery runs: no geometry checks (images made by other tools
#: trip them), and messages in English for the errors Bakery reports.
MTOOLS_ENV = {**os.environ, "MTOOLS_SKIP_CHECK": "1", "LC_ALL": "C"}


def read_cmdline(boot_dir: Path) -> str:
    """The kernel command line an extracted boot partition carries, stripped ("" if none)."""
    cmdline = boot_dir / "cmdline.txt"
    if not cmdline.is_file():
        return ""
    return cmdline.read_text(errors="replace").strip()


def extract_boot(raw: Path, partition: Partition, dest: Path) -> None:
    image = f"{raw}@@{partition.offset}"
    listing = run(["mdir", "-/", "-b", "-i", image, "::/"], env=MTOOLS_ENV, code="no_fat_boot")
    for line in listing.decode(errors="replace").splitlines():
        check_fat_path(line)
    check_fat_size(raw, partition, image)
    run(
        ["mcopy", "-s", "-n", "-p", "-m", "-i", image, "::/", f"{dest}/"],
        env=MTOOLS_ENV,
        code="extract_failed",
    )
    os.utime(dest)  # mcopy -m stamps it with the FAT root's nonexistent date (year 2098)


def check_fat_size(raw: Path, partition: Partition, image: str) -> None:
    """Refuse a boot partition whose files add up to more than the partition holds.

    Entries that share clusters (cross-linked, as no real FAT is) are each copied whole
    by mcopy: a few such entries over one big file turned a 17 MB upload into a boot
    tree of a gigabyte. ``mdu`` counts every entry's clusters, shared or not."""
    usage = run(["mdu", "-s", "-i", image, "::/"], env=MTOOLS_ENV, code="corrupt_boot")
    try:
        clusters = int(usage.split()[-1])
    except (IndexError, ValueError):
        raise ImageError("corrupt_boot", f"mdu gave an unreadable answer: {usage!r}") from None
    listed = clusters * _cluster_bytes(raw, partition)
    if listed > partition.sectors * SECTOR:
        raise ImageError(
            "corrupt_boot",
            f"boot partition lists {listed} bytes of files, more than its own "
            f"{partition.sectors * SECTOR}: its entries share clusters",
        )


def _cluster_bytes(raw: Path, partition: Partition) -> int:
    """Bytes per sector times sectors per cluster, from the FAT boot sector (mdir has
    read it, so it is a FAT's)."""
    with raw.open("rb") as image:
        image.seek(partition.offset + 11)
        field = image.read(3)
    return int.from_bytes(field[:2], "little") * field[2]


def check_fat_path(listed: str) -> None:
    """Refuse a boot partition name that could make mcopy write outside its destination."""
    path = listed.removeprefix("::/").rstrip("/")
    parts = path.split("/")
    if any(part in ("", ".", "..") or "\\" in part for part in parts) and path:
        raise ImageError("extract_failed", f"boot partition holds an unsafe file name {listed!r}")
