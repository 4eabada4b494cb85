"""Real Raspberry-Pi-OS-like SD card images, built without loop mounts or root.

The demo's bakeform is one of these, and tests of the bakeform import need images
with the same shape as the ones operators upload (MBR, FAT32 ``bootfs`` first, ext4
``rootfs`` second, a stock ``cmdline.txt``), and with the awkward corners of a real
root tree (setuid files, sticky dirs, sparse files, foreign owners, dangling symlinks,
file capabilities, ACLs and other extended attributes).
Everything is written in user space with sfdisk, mkfs.vfat/mtools and
``mkfs.ext4 -d``, so it runs anywhere the tools exist.
"""

from __future__ import annotations

import os
import struct
import subprocess
import tempfile
from pathlib import Path

from ..images.fat import MTOOLS_ENV

SECTOR = 512
MIB = 1024 * 1024
#: First partition starts at 1 MiB, like Raspberry Pi Imager images.
FIRST_SECTOR = 2048
#: The MBR disk identifier; its hex form is the PARTUUID prefix in cmdline.txt and fstab.
DISK_ID = "4e639091"
#: What a fresh Raspberry Pi OS bookworm image boots with.
STOCK_CMDLINE = (
    f"console=serial0,115200 console=tty1 root=PARTUUID={DISK_ID}-02 rootfstype=ext4 "
    "fsck.repair=yes rootwait quiet init=/usr/lib/raspberrypi-sys-mods/firstboot\n"
)
#: Tools the builder runs; tests skip when one is missing.
REQUIRED_TOOLS = ("sfdisk", "mkfs.vfat", "mcopy", "mkfs.ext4")

#: ``cap_net_raw=ep`` as a ``security.capability`` xattr (vfs_cap_data revision 2): what
#: Raspberry Pi OS and Debian give ``ping`` instead of setuid.
CAP_NET_RAW = struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0)
#: ACL entry tags of the binary ``system.posix_acl_*`` form, and the id of the entries
#: that have none (owner, owning group, mask, other).
ACL_USER_OBJ, ACL_USER, ACL_GROUP_OBJ, ACL_GROUP, ACL_MASK, ACL_OTHER = 1, 2, 4, 8, 16, 32
ACL_NO_ID = 0xFFFFFFFF


def posix_acl(*entries: tuple[int, int, int]) -> bytes:
    """A ``system.posix_acl_*`` value (what setfacl writes): version 2, then (tag,
    permissions, id) entries."""
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *entry) for entry in entries)


#: What systemd-journald's tmpfiles give ``/var/log/journal`` on Raspberry Pi OS, as
#: access and default ACL: ``group:adm:r-x`` (gid 4) beside the owner's bits.
JOURNAL_ACL = posix_acl(
    (ACL_USER_OBJ, 7, ACL_NO_ID),
    (ACL_GROUP_OBJ, 5, ACL_NO_ID),
    (ACL_GROUP, 5, 4),
    (ACL_MASK, 5, ACL_NO_ID),
    (ACL_OTHER, 5, ACL_NO_ID),
)


def default_boot_files() -> dict[str, bytes]:
    """Small stand-ins for the firmware, kernel and device tree of a Pi 4 boot partition."""
    return {
        "start4.elf": b"\x7fELF fake VideoCore firmware\n" + bytes(range(256)) * 16,
        "fixup4.dat": b"fake fixup table\n" * 64,
        "config.txt": b"[all]\narm_64bit=1\ndtoverlay=vc4-kms-v3d\nenable_uart=1\n",
        "cmdline.txt": STOCK_CMDLINE.encode(),
        "kernel8.img": b"ARMd fake arm64 kernel image\n" * 2048,
        "bcm2711-rpi-4-b.dtb": b"\xd0\x0d\xfe\xed fake device tree\n" * 32,
        "overlays/vc4-kms-v3d.dtbo": b"\xd0\x0d\xfe\xed fake overlay\n" * 8,
    }


def fleet_boot_files() -> dict[str, bytes]:
    """A boot partition every simulated model boots from, as Raspberry Pi OS images
    carry one: the Pi 4 files plus the Pi 3 firmware and device trees and the Pi 5
    kernel and device tree."""
    return {
        **default_boot_files(),
        "start.elf": b"\x7fELF fake VideoCore firmware (Pi 3)\n" + bytes(range(256)) * 16,
        "fixup.dat": b"fake fixup table (Pi 3)\n" * 64,
        "bcm2710-rpi-3-b.dtb": b"\xd0\x0d\xfe\xed fake Pi 3B device tree\n" * 32,
        "bcm2710-rpi-3-b-plus.dtb": b"\xd0\x0d\xfe\xed fake Pi 3B+ device tree\n" * 32,
        "kernel_2712.img": b"ARMd fake Pi 5 kernel image\n" * 2048,
        "bcm2712-rpi-5-b.dtb": b"\xd0\x0d\xfe\xed fake Pi 5 device tree\n" * 32,
    }


def firmware_files() -> dict[str, bytes]:
    """What the TFTP root serves without a serial prefix: the Pi 3 ROM's second stage
    (operators copy it from the raspi-firmware package)."""
    return {"bootcode.bin": b"fake bootcode.bin second stage\n" * 1600}


def populate_root(dir: Path) -> Path:
    """Fill ``dir`` with a small Pi OS-like root tree and return it.

    It carries what identity seasoning and the import must get right: fstab with the
    PARTUUID lines, hostname, machine-id, SSH host keys, a resolv.conf symlink, absolute
    and relative symlinks, a sparse file, setuid/sticky/private modes, foreign owners
    (only when running as root), an empty dir, a name with spaces, a hard link, a fifo
    and, as root, a device node and extended attributes of each namespace: a file
    capability, access and default ACLs, ``trusted.*`` on a symlink, ``user.*``.
    """
    dir.mkdir(parents=True, exist_ok=True)
    files = {
        "etc/fstab": (
            "proc            /proc           proc    defaults          0       0\n"
            f"PARTUUID={DISK_ID}-01  /boot/firmware  vfat    defaults          0       2\n"
            f"PARTUUID={DISK_ID}-02  /               ext4    defaults,noatime  0       1\n"
        ),
        "etc/hostname": "raspberrypi\n",
        "etc/hosts": "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost\n"
        "127.0.1.1\traspberrypi\n",
        "etc/machine-id": "0123456789abcdef0123456789abcdef\n",
        "etc/ssh/ssh_host_ed25519_key": "-----BEGIN OPENSSH PRIVATE KEY-----\nplaceholder\n",
        "etc/ssh/ssh_host_ed25519_key.pub": "ssh-ed25519 AAAAplaceholder root@raspberrypi\n",
        "etc/os-release": 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n',
        "usr/bin/sudo": "#!/bin/sh\necho fake sudo\n",
        "usr/lib/raspberrypi-sys-mods/firstboot": "#!/bin/sh\necho firstboot\n",
        "home/pi/.bashrc": "export PS1='pi$ '\n",
        "home/pi/my notes.txt": "a file with spaces in its name\n",
        "run/resolvconf/.keep": "",
        "usr/bin/ping": "#!/bin/sh\necho fake ping\n",
    }
    for relative, text in files.items():
        path = dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    _make_links(dir)
    _make_sparse(dir / "var/swap")
    (dir / "var/empty").mkdir(parents=True)
    (dir / "tmp").mkdir()
    _set_modes(dir)
    os.mkfifo(dir / "run/initctl")
    if os.geteuid() == 0:
        _set_owners(dir)
        (dir / "dev").mkdir()
        os.mknod(dir / "dev/null", 0o20666, os.makedev(1, 3))
        _set_xattrs(dir)
    return dir


def _set_xattrs(dir: Path) -> None:
    os.setxattr(dir / "usr/bin/ping", "security.capability", CAP_NET_RAW)
    journal = dir / "var/log/journal"
    journal.mkdir(parents=True)
    for kind in ("access", "default"):
        os.setxattr(journal, f"system.posix_acl_{kind}", JOURNAL_ACL)
    os.setxattr(dir / "home/pi/my notes.txt", "user.xdg.origin.url", b"https://example.org/n")
    os.setxattr(dir / "etc/hostname", "user.note", b"")
    os.setxattr(dir / "bin", "trusted.overlay.origin", b"\x00\xfb" * 40, follow_symlinks=False)


def _make_links(dir: Path) -> None:
    (dir / "etc/resolv.conf").symlink_to("../run/resolvconf/resolv.conf")  # dangling, as on a Pi
    (dir / "bin").symlink_to("usr/bin")
    (dir / "etc/localtime").symlink_to("/usr/share/zoneinfo/Etc/UTC")
    os.link(dir / "usr/bin/sudo", dir / "usr/bin/sudoedit")


def _make_sparse(path: Path) -> None:
    """A 16 MiB file with 4 KiB of data in the middle and holes on both sides."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.truncate(16 * MIB)
        f.seek(8 * MIB)
        f.write(b"swap data " * 410)


def _set_modes(dir: Path) -> None:
    os.chmod(dir / "usr/bin/sudo", 0o4755)
    os.chmod(dir / "usr/bin/ping", 0o755)
    os.chmod(dir / "usr/lib/raspberrypi-sys-mods/firstboot", 0o755)
    os.chmod(dir / "tmp", 0o1777)
    os.chmod(dir / "etc/ssh/ssh_host_ed25519_key", 0o600)
    os.chmod(dir / "var/empty", 0o700)


def _set_owners(dir: Path) -> None:
    for path in (dir / "home/pi", *(dir / "home/pi").iterdir()):
        os.lchown(path, 1000, 1000)
    os.lchown(dir / "etc/ssh/ssh_host_ed25519_key", 0, 42)
    os.lchown(dir / "etc/localtime", 1000, 1000)


def build_sd_image(
    path: Path,
    *,
    boot: dict[str, bytes] | None = None,
    root_dir: Path | None = None,
    boot_mib: int = 64,
    root_mib: int = 64,
) -> Path:
    """Write an SD card image to ``path`` and return ``path``.

    ``boot`` maps names (``/`` for subdirectories) to contents; default
    ``default_boot_files()``. ``root_dir`` is copied into the ext4 root; default a fresh
    ``populate_root`` tree. Layout: partition 1 FAT32 (type 0x0c) at 1 MiB, partition 2
    ext4 (type 0x83) right after it, disk id ``DISK_ID``.
    """
    boot = default_boot_files() if boot is None else boot
    boot_start = FIRST_SECTOR
    root_start = boot_start + boot_mib * MIB // SECTOR
    path.unlink(missing_ok=True)
    with path.open("wb") as f:
        f.truncate((root_start * SECTOR) + root_mib * MIB)
    _partition(path, boot_start, root_start, boot_mib, root_mib)
    _make_boot(path, boot_start * SECTOR, boot_mib, boot)
    if root_dir is not None:
        _make_root(path, root_start * SECTOR, root_mib, root_dir)
        return path
    with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
        _make_root(path, root_start * SECTOR, root_mib, populate_root(Path(scratch) / "root"))
    return path


def _partition(path: Path, boot_start: int, root_start: int, boot_mib: int, root_mib: int) -> None:
    script = (
        f"label: dos\nlabel-id: 0x{DISK_ID}\n"
        f"start={boot_start}, size={boot_mib * MIB // SECTOR}, type=c\n"
        f"start={root_start}, size={root_mib * MIB // SECTOR}, type=83\n"
    )
    _run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(path)], input=script)


def _make_boot(path: Path, offset: int, size_mib: int, files: dict[str, bytes]) -> None:
    sectors = str(offset // SECTOR)
    kib = str(size_mib * 1024)
    mkfs = ["mkfs.vfat", "--offset", sectors, "-F", "32", "-s", "1", "-n", "bootfs"]
    _run([*mkfs, str(path), kib])
    if not files:
        return
    with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
        staged = Path(scratch)
        for name, data in files.items():
            (staged / name).parent.mkdir(parents=True, exist_ok=True)
            (staged / name).write_bytes(data)
        sources = [str(p) for p in sorted(staged.iterdir())]
        _run(
            ["mcopy", "-s", "-p", "-m", "-i", f"{path}@@{offset}", *sources, "::/"], env=MTOOLS_ENV
        )


def _make_root(path: Path, offset: int, size_mib: int, root_dir: Path) -> None:
    mkfs = ["mkfs.ext4", "-q", "-F", "-L", "rootfs", "-E", f"offset={offset}", "-d", str(root_dir)]
    _run([*mkfs, str(path), f"{size_mib * 1024}k"])


def sd_image(tmp_path: Path) -> Path:
    """The default image (stock boot files, ``populate_root`` tree) in ``tmp_path``."""
    return build_sd_image(tmp_path / "raspios.img")


def _run(args: list[str], *, input: str | None = None, env: dict[str, str] | None = None) -> None:
    subprocess.run(args, input=input, env=env, check=True, capture_output=True, text=True)
