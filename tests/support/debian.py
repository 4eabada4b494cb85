"""An amd64 Debian root with systemd, as a simulated Pi runs it: what the tests build
stemcells from when the real bosh-agent must run in them (a Pi OS image is arm64, and
this machine is not).

It is made with debootstrap from the Debian mirror this machine's apt uses, once per
machine: the tree is cached as a tarball under ``BAKERY_TEST_CACHE`` (default
``/var/cache/bakery-tests``), keyed by suite and packages, and unpacked for each user.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from bakery import fsutil
from bakery.sim.image import build_sd_image

SUITE = "bookworm"
#: What the root runs and the bosh-agent and disk agent call: systemd as init, the
#: partitioners and mkfs, mount and losetup, usermod, growpart, curl for the boot report.
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "util-linux",
    "fdisk",
    "parted",
    "e2fsprogs",
    "mount",
    "passwd",
    "procps",
    "iproute2",
    "kmod",
    "cloud-guest-utils",
    "sudo",
    "curl",
    "ca-certificates",
)
DEFAULT_MIRROR = "http://deb.debian.org/debian"
CACHE = Path(os.environ.get("BAKERY_TEST_CACHE", "/var/cache/bakery-tests"))
TOOLS = ("debootstrap", "tar")


def mirror() -> str:
    """The first Debian archive (not security) apt is configured with here."""
    sources = [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*")]
    for source in sources:
        try:
            text = source.read_text()
        except OSError:
            continue
        for match in re.finditer(r"(?:URIs:|^deb)\s+(\S+/debian)/?\s", text, re.MULTILINE):
            return match[1]
    return DEFAULT_MIRROR


def cached_tarball() -> Path:
    """The cached tarball of the root, made now if it is not there yet."""
    key = hashlib.sha256(" ".join((SUITE, *PACKAGES)).encode()).hexdigest()[:12]
    tarball = CACHE / f"debian-{SUITE}-amd64-{key}.tar"
    with fsutil.locked(CACHE / ".lock"):
        if not tarball.exists():
            _make(tarball)
    return tarball


def debian_root(dest: Path) -> Path:
    """A fresh copy of the root at ``dest``."""
    dest.mkdir(parents=True)
    subprocess.run(
        ["tar", "--xattrs", "--numeric-owner", "-xpf", str(cached_tarball()), "-C", str(dest)],
        check=True,
    )
    return dest


def _make(tarball: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix="debootstrap-", dir=CACHE))
    try:
        root = work / "root"
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(PACKAGES)}",
                SUITE,
                str(root),
                mirror(),
            ],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [
                "tar",
                "--xattrs",
                "--numeric-owner",
                "-cpf",
                str(work / "root.tar"),
                "-C",
                str(root),
                ".",
            ],
            check=True,
        )
        os.replace(work / "root.tar", tarball)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def debian_image(work: Path) -> Path:
    """An SD card image (``work/debian.img``) whose ext4 root is a fresh copy of the root."""
    return build_sd_image(work / "debian.img", root_dir=debian_root(work / "root"), root_mib=768)
