"""How long cloning a bakeform's root takes: Bakery's clone_root against the original Go
bakery's ``rsync -xa``, on the same loop filesystem, in the same run.

Run as root from the repository: ``sudo .venv/bin/python bench/bake.py``. Every timed run
starts from cold caches (sync, then drop page cache, dentries and inodes) and ends with a
``sync`` of the filesystem, so both sides pay for reading the base and for writing their
copy to the device, not just into memory.
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.support.loopfs

from tests.support.loopfs import loop_filesystem  # noqa: E402

from bakery.roots import clone_root, create_base, delete_tree  # noqa: E402

MIB = 1024 * 1024
TARGETS = {"btrfs": 100.0, "xfs": 3.0, "ext4": 1.0}
#: Share of the bytes in small files; the rest is a few large ones (libraries, firmware).
SMALL_FILES_SHARE = 0.3
FILES_PER_DIR = 40
POOL_BYTES = 16 * MIB


def build_tree(root: Path, files: int, size_bytes: int, seed: int = 7) -> None:
    """A root-like tree: `files` files of `size_bytes` in all, most of them small
    (exponentially distributed sizes), one in 500 large, plus some symlinks."""
    rng = random.Random(seed)
    pool = rng.randbytes(POOL_BYTES)
    large = max(1, files // 500)
    small_mean = size_bytes * SMALL_FILES_SHARE / (files - large)
    sizes = [int(rng.expovariate(1 / small_mean)) for _ in range(files - large)]
    large_size = max(0, size_bytes - sum(sizes)) // large
    sizes += [large_size] * large
    rng.shuffle(sizes)
    for index, size in enumerate(sizes):
        directory = root / f"usr/lib/d{index // (FILES_PER_DIR * 50):03d}/d{index // FILES_PER_DIR}"
        if index % FILES_PER_DIR == 0:
            directory.mkdir(parents=True, exist_ok=True)
            (directory / "link").symlink_to(f"f{index}")
        _write_file(directory / f"f{index}", size, pool, rng)


def _write_file(path: Path, size: int, pool: bytes, rng: random.Random) -> None:
    with open(path, "wb") as file:
        while size > 0:
            chunk = min(size, POOL_BYTES // 2)
            start = rng.randrange(POOL_BYTES - chunk + 1)
            file.write(pool[start : start + chunk])
            size -= chunk


def cold_caches() -> None:
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def timed(copy: Callable[[], None], dest: Path) -> float:
    """Seconds for `copy` from cold caches until its result is on the device."""
    cold_caches()
    start = time.perf_counter()
    copy()
    subprocess.run(["sync", "--file-system", str(dest)], check=True)
    return time.perf_counter() - start


def bakery_run(base: Path, method: str) -> float:
    dest = base.parent / "bake"
    seconds = timed(lambda: clone_root(base, dest, method), dest)
    delete_tree(dest)
    return seconds


def rsync_run(base: Path) -> float:
    dest = base.parent / "rsync"
    seconds = timed(
        lambda: subprocess.run(["rsync", "-xa", f"{base}/", f"{dest}/"], check=True), dest
    )
    delete_tree(dest)
    return seconds


def read_everything(base: Path) -> None:
    """Read the base once, untimed: the first read of freshly written loop images is
    slower (the VM's disk cache beneath ours), and that must not land on whoever runs
    first."""
    for path in base.rglob("*"):
        if path.is_file() and not path.is_symlink():
            with open(path, "rb") as file:
                while file.read(4 * MIB):
                    pass


def prepared_base(stack: ExitStack, fstype: str, files: int, size_mib: int, workdir: Path) -> tuple:
    """Mount a fresh `fstype` big enough for the base and one full copy, fill the base."""
    image_mib = int(size_mib * 2.3) + 512
    mount = stack.enter_context(loop_filesystem(fstype, image_mib, workdir))
    base = mount / "bakeforms/bench/root"
    method = create_base(base)
    started = time.perf_counter()
    build_tree(base, files, size_mib * MIB)
    print(
        f"  {fstype}: built {files} files, {size_mib} MiB in {time.perf_counter() - started:.0f}s"
    )
    return base, method


def compare(fstype: str, files: int, size_mib: int, workdir: Path, repeats: int) -> float:
    """Print one ratio line for `fstype`; returns Bakery's clone time.

    Bakery and rsync runs alternate and each side's median counts, so a drift in the
    machine's speed during the run is shared by both.
    """
    with ExitStack() as stack:
        base, method = prepared_base(stack, fstype, files, size_mib, workdir)
        read_everything(base)
        runs = [(bakery_run(base, method), rsync_run(base)) for _ in range(repeats)]
    bakery = statistics.median(run[0] for run in runs)
    rsync = statistics.median(run[1] for run in runs)
    ratio = rsync / bakery
    verdict = "ok" if ratio >= TARGETS[fstype] else "MISSED"
    print(
        f"{fstype}: bakery {bakery:.3f}s ({method}), rsync {rsync:.1f}s, {ratio:.1f}x faster "
        f"(target >= {TARGETS[fstype]:g}x) {verdict}",
        flush=True,
    )
    return bakery


def btrfs_flatness(files: int, size_mib: int, workdir: Path, repeats: int, first: float) -> None:
    """A snapshot must not cost more with more files: clone twice the files, same bytes."""
    with ExitStack() as stack:
        base, method = prepared_base(stack, "btrfs", files * 2, size_mib, workdir)
        read_everything(base)
        doubled = statistics.median(bakery_run(base, method) for _ in range(repeats))
    ratio = doubled / first
    verdict = "ok" if ratio < 2 else "MISSED"
    print(
        f"btrfs flat: {files} files {first:.3f}s, {files * 2} files {doubled:.3f}s, "
        f"{ratio:.2f}x the time for 2x the files (target < 2x) {verdict}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=30_000)
    parser.add_argument("--size-mib", type=int, default=1536)
    parser.add_argument("--fs", default="btrfs,xfs,ext4", help="comma-separated, in run order")
    parser.add_argument("--workdir", type=Path, default=None, help="where loop images go")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per side")
    args = parser.parse_args()
    unknown = set(args.fs.split(",")) - set(TARGETS)
    if unknown:
        parser.error(f"unknown filesystem(s): {', '.join(sorted(unknown))}")
    workdir = args.workdir or Path(tempfile.gettempdir())
    print(f"cold caches, {args.files} files, {args.size_mib} MiB, median of {args.repeats} runs")
    for fstype in args.fs.split(","):
        bakery = compare(fstype, args.files, args.size_mib, workdir, args.repeats)
        if fstype == "btrfs":
            btrfs_flatness(args.files, args.size_mib, workdir, args.repeats, bakery)


if __name__ == "__main__":
    main()
