"""Bakeform import against the unavoidable work, in one run (needs root: loop mount).

Builds a ~1 GiB Raspberry-Pi-like SD image (256 MiB FAT boot with firmware-sized files,
~750 MiB ext4 root with thousands of small files and some big ones), its ``.xz`` (xz -T2),
then times, per format:

- bakery: ``images.import_image`` reading the upload file;
- baseline: reading the upload once (``cat`` for .img, ``xz -dc`` for .xz) plus ``cp -a`` of
  the root from a read-only loop mount and ``mcopy`` of the boot partition (no vfat here).

Page cache: warm for both sides (every input is read once before the first timed run, and
dirty pages are flushed with an untimed ``sync`` before every timed run).

Every timed run writes to a fresh ext4 loop filesystem of its own, made before the clock
starts: on a long-used filesystem the cost of creating thousands of files depends on its
history, not on the run (ext4 skips inode numbers freed in the last minutes when it
allocates, ``recently_deleted``, and the same run took 0.2 s or 1.6 s to write the root's
files depending on what an earlier run had deleted).

    sudo .venv/bin/python bench/import.py [--size-mib 1024] [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.loopfs import loop_filesystem  # noqa: E402

from bakery.images import import_image  # noqa: E402
from bakery.sim.image import FIRST_SECTOR, MIB, SECTOR, build_sd_image  # noqa: E402

TARGET = 1.5
MTOOLS_ENV = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}


def blob(rng: random.Random, size: int) -> bytes:
    """Half random, half text-like: compresses about like real binaries and configs."""
    half = size // 2
    text = (b"/usr/lib/aarch64-linux-gnu libfoo.so.1 config value=%d\n" % rng.randrange(10**6)) * (
        (size - half) // 50 + 1
    )
    return rng.randbytes(half) + text[: size - half]


def boot_files(rng: random.Random) -> dict[str, bytes]:
    sizes = {"kernel8.img": 9, "kernel_2712.img": 10, "initramfs8": 12, "start4.elf": 2}
    files = {name: blob(rng, mib * MIB) for name, mib in sizes.items()}
    files["cmdline.txt"] = b"console=tty1 root=PARTUUID=4e639091-02 rootfstype=ext4 rootwait\n"
    files["config.txt"] = b"arm_64bit=1\n"
    for index in range(40):
        files[f"overlays/overlay{index}.dtbo"] = blob(rng, rng.randrange(2_000, 40_000))
    return files


def root_tree(rng: random.Random, top: Path, budget: int) -> None:
    """Thousands of small files in nested dirs, a few hundred medium, a handful large."""
    big = [budget // 8, budget // 10, budget // 12, budget // 16]
    for index, size in enumerate(big):
        write(top / f"usr/lib/big/lib{index}.so", blob(rng, size))
    budget -= sum(big)
    count = 0
    while budget > 0:
        size = rng.choice([rng.randrange(200, 16_000)] * 9 + [rng.randrange(100_000, 2_000_000)])
        write(top / f"usr/share/d{count % 97}/s{count % 13}/file{count}", blob(rng, size))
        if count % 50 == 0:
            (top / f"usr/bin/link{count}").parent.mkdir(parents=True, exist_ok=True)
            os.symlink(
                f"../share/d{count % 97}/s{count % 13}/file{count}", top / f"usr/bin/link{count}"
            )
        budget -= size
        count += 1


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def build(work: Path, size_mib: int) -> tuple[Path, Path]:
    rng = random.Random(1)
    boot_mib = 256 if size_mib >= 512 else size_mib // 4
    root_mib = size_mib - boot_mib - 1
    tree = work / "tree"
    root_tree(rng, tree, int(root_mib * MIB * 0.72))
    image = build_sd_image(
        work / "bench.img",
        boot=boot_files(rng),
        root_dir=tree,
        boot_mib=boot_mib,
        root_mib=root_mib,
    )
    subprocess.run(["xz", "-T2", "-1", "-k", "-f", str(image)], check=True)
    shutil.rmtree(tree)
    return image, image.with_name(image.name + ".xz")


def timed(action: Callable[[], object]) -> float:
    """Wall time of ``action``, after flushing earlier runs' dirty pages (untimed), so no
    run pays for the writeback of the one before."""
    os.sync()
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def fresh_output(work: Path, image: Path) -> AbstractContextManager[Path]:
    """A fresh ext4 filesystem for one timed run's output (see above): room for
    Bakery's scratch copy of the image and the trees extracted from it, with a margin."""
    size_mib = 3 * image.stat().st_size // MIB + 256
    return loop_filesystem("ext4", size_mib, work)


def bakery_import(upload: Path, image: Path, work: Path) -> float:
    with fresh_output(work, image) as out:
        staging = out / "staging"
        (staging / "root").mkdir(parents=True)
        with upload.open("rb") as stream:
            return timed(lambda: import_image(stream, staging))


def baseline(upload: Path, image: Path, work: Path, read_upload: list[str]) -> float:
    with fresh_output(work, image) as out:
        return timed(lambda: unavoidable_work(upload, image, out, work / "mnt", read_upload))


def unavoidable_work(
    upload: Path, image: Path, out: Path, mnt: Path, read_upload: list[str]
) -> None:
    """Read the upload once, ``cp -a`` the root from a read-only loop mount, ``mcopy`` the
    boot partition."""
    (out / "boot").mkdir(parents=True)
    mnt.mkdir(exist_ok=True)
    root_offset = FIRST_SECTOR * SECTOR + boot_size(image)
    with open(os.devnull, "wb") as sink:
        subprocess.run([*read_upload, str(upload)], stdout=sink, check=True)
    subprocess.run(
        ["mount", "-o", f"loop,ro,offset={root_offset}", str(image), str(mnt)], check=True
    )
    try:
        subprocess.run(["cp", "-a", f"{mnt}/.", str(out / "root")], check=True)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    subprocess.run(
        ["mcopy", "-s", "-n", "-p", "-m", "-i", f"{image}@@{FIRST_SECTOR * SECTOR}",
         "::/", f"{out / 'boot'}/"],
        env=MTOOLS_ENV, check=True,
    )  # fmt: skip


def boot_size(image: Path) -> int:
    with image.open("rb") as f:
        f.seek(446 + 12)
        return int.from_bytes(f.read(4), "little") * SECTOR


def warm(*paths: Path) -> None:
    for path in paths:
        with path.open("rb") as f:
            while f.read(16 * MIB):
                pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="image size (default 1024)")
    parser.add_argument("--workdir", type=Path, help="where to build (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the images afterwards")
    parser.add_argument("--reuse", action="store_true", help="reuse images kept in --workdir")
    parser.add_argument("--rounds", type=int, default=2, help="best of N per side (default 2)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (the baseline loop-mounts the root partition)")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bakery-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        started = time.perf_counter()
        image, image_xz = work / "bench.img", work / "bench.img.xz"
        if not (args.reuse and image.exists() and image_xz.exists()):
            image, image_xz = build(work, args.size_mib)
        elapsed = time.perf_counter() - started
        print(f"built {image.stat().st_size / MIB:.0f} MiB image, "
              f"{image_xz.stat().st_size / MIB:.0f} MiB .xz in {elapsed:.1f}s")  # fmt: skip
        warm(image, image_xz)
        for label, upload, reader in ((".img", image, ["cat"]), (".xz", image_xz, ["xz", "-dc"])):
            theirs = min(baseline(upload, image, work, reader) for _ in range(args.rounds))
            ours = min(bakery_import(upload, image, work) for _ in range(args.rounds))
            print(f"import {label}: bakery {ours:.2f}s, baseline {theirs:.2f}s, "
                  f"ratio {ours / theirs:.2f}x (target <= {TARGET})")  # fmt: skip
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
