"""A bake's ``boot.img`` and ``boot.sig``: what a Pi 4 or Pi 5 fetches when it boots over
HTTP (EEPROM boot mode 7) instead of file by file over TFTP (pi-http-boot).

``boot.img`` is a FAT16 image, made in user space (mkfs.fat, then mtools), holding what the Pi would
have read over TFTP: the bake's boot files, with its own cmdline.txt (the NFS root) and
config.txt (trimmed as TFTP serves it). ``boot.sig`` is what ``rpi-eeprom-digest -k``
writes: the image's sha256, a timestamp and the RSA-2048 PKCS#1 v1.5 signature of its
SHA-256, made by ``openssl`` with the operator's key; the bootloader refuses an image
whose signature its EEPROM's public key does not verify.

Both are made on first request and kept beside the bake's root, with a fingerprint of
what went in (the files' names, sizes and modification times, the cmdline, the config
rules and the key), so they are rebuilt exactly when one of those changes: for a bake,
only when the settings change, since its boot files are its own links. The image and
its signature are made in a staging directory and renamed into place one after the
other; the fingerprint is removed first and written last, so a build cut short is
redone by the next request.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .. import fsutil
from ..images.fat import MTOOLS_ENV
from .bootfiles import BootTarget, adjust_config_txt

IMAGE = "boot.img"
SIGNATURE = "boot.sig"
FINGERPRINT = "fingerprint"
#: The bootloader's ramdisk for boot.img is at most 96 MiB (pi-http-boot).
MAX_IMAGE_BYTES = 96 << 20
#: Files whose content Bakery writes itself rather than copying the bake's.
RENDERED = ("cmdline.txt", "config.txt")
KEY_BITS = 2048
SECTOR = 512
CLUSTER = 4 * SECTOR


class BootImageError(RuntimeError):
    """The bake's boot files cannot make a boot.img (too large, unreadable) or the key
    cannot sign it; the message says which."""


@dataclass(frozen=True)
class BootImage:
    image: Path
    signature: Path


def boot_image(target: BootTarget, key_file: Path, drop: list[str]) -> BootImage:
    """The bake's boot.img and boot.sig in its ``http_dir``, built (or rebuilt) if what
    goes into them changed since they were made. The directory's parent (the bake's own
    directory) must exist: a bake unbaked meanwhile gets no image made for it."""
    if target.http_dir is None:
        raise BootImageError(f"bake {target.bake_id} does not boot over HTTP")
    directory = target.http_dir
    made = BootImage(directory / IMAGE, directory / SIGNATURE)
    fingerprint = _fingerprint(target, drop, key_file)
    try:
        if (directory / FINGERPRINT).read_text() == fingerprint and made.signature.exists():
            return made
    except OSError:
        pass
    directory.mkdir(mode=0o700, exist_ok=True)
    (directory / FINGERPRINT).unlink(missing_ok=True)  # what follows no longer matches it
    staging = directory / fsutil.staging_name()
    staging.mkdir()
    try:
        build_image(target, staging / IMAGE, drop)
        (staging / SIGNATURE).write_text(sign(staging / IMAGE, key_file))
        os.rename(staging / IMAGE, made.image)
        os.rename(staging / SIGNATURE, made.signature)
    finally:
        fsutil.remove(staging)
    fsutil.write_atomically(directory / FINGERPRINT, fingerprint)
    return made


def _fingerprint(target: BootTarget, drop: list[str], key_file: Path) -> str:
    """What went into the image: each boot file's name, inode, size and modification time
    (not its change time: the bake's files are hard links to its bakeform's, whose change
    time moves whenever another bake links or unlinks them), the cmdline, the config
    rules and the key."""
    files = []
    for path in sorted(target.boot_dir.rglob("*")):
        info = path.lstat()
        name = str(path.relative_to(target.boot_dir))
        files.append([name, info.st_ino, info.st_size, info.st_mtime_ns])
    key = key_file.stat()
    inputs = [files, target.cmdline, sorted(drop), [key.st_ino, key.st_mtime_ns]]
    return hashlib.sha256(json.dumps(inputs).encode()).hexdigest()


def build_image(target: BootTarget, image: Path, drop: list[str]) -> None:
    """Write the FAT image of the bake's boot files, its cmdline.txt and config.txt
    rendered, to ``image``; BootImageError if it would pass the bootloader's limit."""
    boot = target.boot_dir
    entries = sorted(entry for entry in os.listdir(boot) if entry.lower() not in RENDERED)
    rendered = {"cmdline.txt": target.cmdline.encode()}
    config = next((boot / name for name in os.listdir(boot) if name.lower() == "config.txt"), None)
    if config is not None:
        text = config.read_bytes().decode("latin-1")
        rendered["config.txt"] = adjust_config_txt(text, drop).encode("latin-1")
    content, count = _tree_bytes(boot, entries)
    content += sum(len(data) for data in rendered.values())
    size = _image_bytes(content, count + len(rendered))
    if size > MAX_IMAGE_BYTES:
        raise BootImageError(
            f"the boot files take {content >> 20} MiB: more than a {MAX_IMAGE_BYTES >> 20} MiB "
            "boot.img the bootloader can load"
        )
    _make_fat16(image, size)
    if entries:
        sources = [str(boot / entry) for entry in entries]
        _mtools(["mcopy", "-s", "-p", "-m", "-i", str(image), *sources, "::/"])
    with tempfile.TemporaryDirectory() as scratch:
        for name, data in rendered.items():
            (Path(scratch) / name).write_bytes(data)
        files = [str(Path(scratch) / name) for name in rendered]
        _mtools(["mcopy", "-i", str(image), *files, "::/"])


def _make_fat16(image: Path, size: int) -> None:
    """An empty FAT16 filesystem of ``size`` bytes with 2 KiB clusters in a new file
    (dosfstools' mkfs.fat: mtools' mformat picks its own cluster size)."""
    clusters = str(CLUSTER // SECTOR)
    args = ["mkfs.fat", "-C", "-F", "16", "-s", clusters, "-n", "BOOT", str(image), str(size >> 10)]
    try:
        fsutil.run(args)
    except fsutil.CommandFailed as exc:
        raise BootImageError(str(exc)) from None


def _tree_bytes(top: Path, entries: list[str]) -> tuple[int, int]:
    """(bytes of file content, files and directories) under ``entries`` of ``top``."""
    total, count = 0, 0
    for entry in entries:
        path = top / entry
        paths = [path, *path.rglob("*")] if path.is_dir() and not path.is_symlink() else [path]
        count += len(paths)
        total += sum(p.lstat().st_size for p in paths if p.is_file() and not p.is_symlink())
    return total, count


def _image_bytes(content: int, entries: int) -> int:
    """A FAT16 image (2 KiB clusters) just large enough for ``content`` bytes in
    ``entries`` files and directories: every Pi downloads the whole image, free space
    included. Each entry wastes less than a cluster, the two FATs take 1/512 of the
    size, and the boot sector and root directory fit in 64 KiB. Whole 64 KiB, at least
    9 MiB: FAT16 needs 4085 clusters, and FAT12 is not a boot partition's filesystem."""
    size = content + entries * CLUSTER + content // 256 + (64 << 10)
    return max(9 << 20, -(-size // (64 << 10)) * (64 << 10))


def _mtools(args: list[str]) -> None:
    try:
        fsutil.run(args, env=MTOOLS_ENV)
    except fsutil.CommandFailed as exc:
        raise BootImageError(str(exc)) from None


# -- signing -------------------------------------------------------------------------------


def sign(image: Path, key_file: Path) -> str:
    """boot.sig for ``image``, as rpi-eeprom-digest writes it."""
    digest = hashlib.sha256()
    with open(image, "rb") as data:
        for chunk in iter(lambda: data.read(1 << 20), b""):
            digest.update(chunk)
    try:
        signature = fsutil.run(["openssl", "dgst", "-sha256", "-sign", str(key_file), str(image)])
    except fsutil.CommandFailed as exc:
        raise BootImageError(f"cannot sign boot.img: {exc.detail}") from None
    return f"{digest.hexdigest()}\nts: {int(time.time())}\nrsa2048: {signature.hex()}\n"


def ensure_key(key_file: Path) -> None:
    """Make the operator's RSA-2048 signing key at ``key_file`` (mode 0600) unless it
    exists; an existing key must be RSA-2048, the only kind the bootloader verifies."""
    fsutil.make_once(
        key_file,
        lambda staging: fsutil.run(["openssl", "genrsa", "-out", str(staging), str(KEY_BITS)]),
    )
    bits = key_bits(key_file)
    if bits != KEY_BITS:
        raise BootImageError(f"{key_file} is a {bits}-bit key; the bootloader needs RSA-2048")


def key_bits(key_file: Path) -> int:
    """The size of the RSA private key in ``key_file``."""
    try:
        text = fsutil.run(["openssl", "rsa", "-in", str(key_file), "-noout", "-text"]).decode()
    except fsutil.CommandFailed as exc:
        raise BootImageError(f"{key_file} is not an RSA private key: {exc.detail}") from None
    first = text.splitlines()[0]  # "Private-Key: (2048 bit, 2 primes)"
    return int(first.split("(", 1)[1].split()[0])


def public_key_pem(key_file: Path) -> str:
    """The public half of the signing key: what ``rpi-eeprom-config --pubkey`` puts in
    each Pi's EEPROM."""
    try:
        return fsutil.run(["openssl", "rsa", "-in", str(key_file), "-pubout"]).decode()
    except fsutil.CommandFailed as exc:
        raise BootImageError(f"{key_file} is not an RSA private key: {exc.detail}") from None
