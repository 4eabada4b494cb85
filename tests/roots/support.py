"""What the root tests share: Pi-like and awkward trees to clone, and ways to list them for
comparison."""

from __future__ import annotations

import hashlib
import os
import re
import socket
import stat
import subprocess
from pathlib import Path

from bakery.roots import (
    clone_root,
    season_root,
)
from bakery.sim.image import (
    ACL_GROUP_OBJ,
    ACL_MASK,
    ACL_NO_ID,
    ACL_OTHER,
    ACL_USER,
    ACL_USER_OBJ,
    CAP_NET_RAW,
    posix_acl,
)

MIB = 1024 * 1024


FS_SIZE_MIB = {"btrfs": 512, "xfs": 512, "ext4": 256, "tmpfs": 256}


RESOLV = "nameserver 10.0.0.53\nsearch pis.example\n"


STOCK_FSTAB = (
    "proc            /proc           proc    defaults          0       0\n"
    "PARTUUID=6c586e13-01  /boot/firmware  vfat    defaults          0       2\n"
    "PARTUUID=6c586e13-02  /               ext4    defaults,noatime  0       1\n"
    "# a swapfile is not a swap partition, no using swapon|off from here on\n"
    "tmpfs /tmp tmpfs defaults,size=100m 0 0\n"
)


def make_pi_root(root: Path) -> None:
    """A small tree shaped like a Raspberry Pi OS root, with the awkward cases in it."""
    etc = root / "etc"
    (etc / "ssh").mkdir(parents=True)
    (etc / "hostname").write_text("raspberrypi\n")
    (etc / "hosts").write_text("127.0.0.1\tlocalhost\n::1\t\tlocalhost\n127.0.1.1\traspberrypi\n")
    (etc / "machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    (etc / "fstab").write_text(STOCK_FSTAB)
    (etc / "resolv.conf").symlink_to("../run/systemd/resolve/stub-resolv.conf")
    (root / "var/lib/dbus").mkdir(parents=True)
    (root / "var/lib/dbus/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    for kind in ("ed25519", "ecdsa"):
        keygen(etc / "ssh" / f"ssh_host_{kind}_key", kind)


def keygen(path: Path, kind: str) -> None:
    subprocess.run(["ssh-keygen", "-q", "-N", "", "-t", kind, "-f", str(path)], check=True)


def make_awkward_tree(root: Path) -> None:
    """Everything a faithful copy must keep: owners, modes, symlinks, hard links, holes,
    xattrs, FIFOs."""
    (root / "usr/bin").mkdir(parents=True)
    (root / "bin").symlink_to("usr/bin")
    (root / "usr/bin/dash").write_bytes(b"\x7fELF dash")
    (root / "usr/bin/sh").symlink_to("/usr/bin/dash")
    (root / "usr/bin/sudo").write_bytes(b"\x7fELF sudo")
    os.chmod(root / "usr/bin/sudo", 0o4755)
    (root / "home/pi").mkdir(parents=True)
    os.chown(root / "home/pi", 1000, 1000)
    (root / "home/pi/notes").write_text("mine")
    os.chown(root / "home/pi/notes", 1000, 1000)
    os.chmod(root / "home/pi/notes", 0o600)
    (root / "tmp").mkdir(mode=0o1777)
    os.chmod(root / "tmp", 0o1777)
    os.link(root / "usr/bin/dash", root / "usr/bin/rbash")
    with open(root / "var.img", "wb") as sparse:
        sparse.write(b"start")
        sparse.seek(32 * MIB)
        sparse.write(b"end")
    os.setxattr(root / "usr/bin/dash", "user.bakery", b"kept")
    os.mkfifo(root / "tmp/fifo")


#: user::rwx user:1000:r-x group::r-x mask::r-x other::---
ACL_WITH_NAMED_USER = posix_acl(
    (ACL_USER_OBJ, 7, ACL_NO_ID),
    (ACL_USER, 5, 1000),
    (ACL_GROUP_OBJ, 5, ACL_NO_ID),
    (ACL_MASK, 5, ACL_NO_ID),
    (ACL_OTHER, 0, ACL_NO_ID),
)


#: Times with nanoseconds no filesystem would round to by chance.
ATIME_NS, MTIME_NS = 1_600_000_000_123_456_789, 1_500_000_000_987_654_321


def make_exotic_tree(root: Path) -> None:
    """What a whole OS root holds beyond the everyday: device nodes, a socket, hard links
    across directories (also of a symlink), holes in the middle of a file, ACLs, file
    capabilities, setgid, and nanosecond times on every kind of entry."""
    (root / "dev").mkdir(parents=True)
    os.mknod(root / "dev/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(root / "dev/loop0", stat.S_IFBLK | 0o660, os.makedev(7, 0))
    os.chown(root / "dev/loop0", 0, 6)
    (root / "usr/bin").mkdir(parents=True, exist_ok=True)
    (root / "usr/sbin").mkdir()
    (root / "usr/bin/ping").write_bytes(b"\x7fELF ping")
    os.setxattr(root / "usr/bin/ping", "security.capability", CAP_NET_RAW)
    (root / "usr/bin/crontab").write_bytes(b"\x7fELF crontab")
    os.chown(root / "usr/bin/crontab", 0, 102)
    os.chmod(root / "usr/bin/crontab", 0o2755)
    os.link(root / "usr/bin/crontab", root / "usr/sbin/crontab")
    os.link(root / "usr/bin/crontab", root / "usr/crontab-again")
    (root / "usr/bin/python3").symlink_to("python3.11")
    os.lchown(root / "usr/bin/python3", 1000, 1000)
    os.link(root / "usr/bin/python3", root / "usr/sbin/python3", follow_symlinks=False)
    with open(root / "usr/holes.img", "wb") as holey:
        for offset in (0, 8 * MIB, 24 * MIB):
            holey.seek(offset)
            holey.write(os.urandom(64 * 1024))
        holey.truncate(40 * MIB)
    (root / "run").mkdir()
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(root / "run/daemon.sock"))
    (root / "srv").mkdir()
    (root / "srv/shared").write_text("for pi and uid 1000")
    os.setxattr(root / "srv/shared", "system.posix_acl_access", ACL_WITH_NAMED_USER)
    for path in (root / "usr/bin/ping", root / "usr/bin", root / "dev/null", root):
        os.utime(path, ns=(ATIME_NS, MTIME_NS))
    os.utime(root / "usr/bin/python3", ns=(ATIME_NS, MTIME_NS), follow_symlinks=False)


def tree_listing(root: Path) -> dict[str, tuple]:
    """Every entry of `root` (symlinks not followed) with all a faithful copy keeps: type
    and mode, owner, size, device number, mtime in ns, symlink target, xattrs, and the
    first name of its inode (so hard links show as entries sharing one)."""
    paths = [root]
    for directory, subdirs, files in os.walk(root):
        paths += [Path(directory, name) for name in subdirs + files]
    listing: dict[str, tuple] = {}
    first_names: dict[int, str] = {}
    for path in sorted(paths):
        info = os.lstat(path)
        relpath = str(path.relative_to(root))
        xattrs = {
            name: os.getxattr(path, name, follow_symlinks=False)
            for name in sorted(os.listxattr(path, follow_symlinks=False))
        }
        listing[relpath] = (
            stat.filemode(info.st_mode),
            info.st_uid,
            info.st_gid,
            None if stat.S_ISDIR(info.st_mode) else info.st_size,
            info.st_rdev,
            info.st_mtime_ns,
            os.readlink(path) if stat.S_ISLNK(info.st_mode) else None,
            xattrs,
            first_names.setdefault(info.st_ino, relpath),
        )
    return listing


def file_digests(directory: Path) -> dict[str, str]:
    """Every file under `directory` (not following symlinks) with a digest of its bytes."""
    digests = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file() and not path.is_symlink():
            digests[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def subvolume_field(path: Path, field: str) -> str:
    shown = subprocess.run(
        ["btrfs", "subvolume", "show", str(path)], check=True, capture_output=True, text=True
    ).stdout
    return re.search(rf"^\s*{field}:\s*(\S+)", shown, re.MULTILINE)[1]


def key_fingerprint(path: Path) -> str:
    listed = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(path)], check=True, capture_output=True, text=True
    ).stdout
    return listed.split()[1]


def boot_partition(top: Path) -> Path:
    (top / "overlays").mkdir(parents=True)
    (top / "kernel8.img").write_bytes(b"kernel" * 1000)
    (top / "overlays" / "vc4.dtbo").write_bytes(b"overlay")
    return top


def seasoned_clone(base: Path, name: str) -> Path:
    clone = base.with_name(name)
    clone_root(base, clone, "copy")
    season_root(clone, hostname=name, resolv_conf=RESOLV)
    return clone
