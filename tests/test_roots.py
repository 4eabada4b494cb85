"""Per-bake roots: clones that cost what the filesystem allows, and seasoning that gives
each clone its own identity without ever writing outside it."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import stat
import struct
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from bakery.roots import (
    SeasoningError,
    clone_boot,
    clone_method_for,
    clone_root,
    create_base,
    delete_tree,
    fstab_without_sd_card,
    hosts_with_hostname,
    season_root,
)
from tests.support.loopfs import loop_filesystem, missing_tools

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


@pytest.fixture(scope="module")
def scratch_on() -> Iterator[Callable[[str], Path]]:
    """``scratch_on("xfs")`` is a fresh empty directory on a real xfs filesystem.

    One loop filesystem per type is made on first use and shared by the module's tests
    (each in its own directory), then unmounted and detached at the end.
    """
    with ExitStack() as stack:
        mounts: dict[str, Path] = {}

        def scratch(fstype: str) -> Path:
            missing = missing_tools(fstype)
            if missing:
                pytest.skip(f"{fstype} needs {', '.join(missing)}")
            if fstype not in mounts:
                mounts[fstype] = stack.enter_context(loop_filesystem(fstype, FS_SIZE_MIB[fstype]))
            return Path(tempfile.mkdtemp(dir=mounts[fstype]))

        yield scratch


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


#: Binary ``system.posix_acl_*`` xattrs (what setfacl writes): version 2, then entries of
#: tag, permissions, id. Tags: user owner 1, named user 2, owning group 4, mask 16, other 32.
ACL_VERSION = struct.pack("<I", 2)
NO_ID = 0xFFFFFFFF


def acl(*entries: tuple[int, int, int]) -> bytes:
    return ACL_VERSION + b"".join(struct.pack("<HHI", *entry) for entry in entries)


#: user::rwx user:1000:r-x group::r-x mask::r-x other::---
ACL_WITH_NAMED_USER = acl(
    (1, 7, NO_ID), (2, 5, 1000), (4, 5, NO_ID), (16, 5, NO_ID), (32, 0, NO_ID)
)
#: cap_net_raw=ep (vfs_cap_data revision 2), what ping ships with instead of setuid.
CAP_NET_RAW = struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0)
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


# --- btrfs: snapshots --------------------------------------------------------------------------


@pytest.mark.root
def test_base_on_btrfs_is_a_subvolume_so_bakes_are_snapshots(scratch_on):
    base = scratch_on("btrfs") / "bakeforms/raspios/root"

    assert create_base(base) == "snapshot"

    assert subvolume_field(base, "UUID")
    assert list(base.iterdir()) == []


@pytest.mark.root
def test_clone_on_btrfs_is_a_writable_snapshot_of_the_base(scratch_on):
    scratch = scratch_on("btrfs")
    base, clone = scratch / "base", scratch / "clone"
    create_base(base)
    make_pi_root(base)

    clone_root(base, clone, "snapshot")
    (clone / "etc/hostname").write_text("pi-01\n")
    (clone / "etc/new").write_text("only in the bake")

    assert subvolume_field(clone, "Parent UUID") == subvolume_field(base, "UUID")
    assert (base / "etc/hostname").read_text() == "raspberrypi\n"
    assert not (base / "etc/new").exists()


@pytest.mark.root
def test_delete_tree_removes_a_snapshot_holding_a_nested_subvolume(scratch_on):
    scratch = scratch_on("btrfs")
    base, clone = scratch / "base", scratch / "clone"
    create_base(base)
    make_pi_root(base)
    clone_root(base, clone, "snapshot")
    subprocess.run(["btrfs", "subvolume", "create", str(clone / "var/lib/machines")], check=True)

    delete_tree(clone)

    assert not clone.exists()
    assert (base / "etc/hostname").exists()


@pytest.mark.root
def test_plain_directory_on_btrfs_is_cloned_by_reflink(scratch_on):
    plain = scratch_on("btrfs") / "plain"
    plain.mkdir()

    assert clone_method_for(plain) == "reflink"


# --- xfs: reflinks -----------------------------------------------------------------------------


@pytest.mark.root
def test_clone_on_xfs_shares_extents_with_the_base(scratch_on):
    scratch = scratch_on("xfs")
    base, clone = scratch / "base", scratch / "clone"
    assert create_base(base) == "reflink"
    with open(base / "big.bin", "wb") as big:
        for _ in range(200):
            big.write(os.urandom(MIB))
    os.sync()
    free_before = shutil.disk_usage(scratch).free

    clone_root(base, clone, "reflink")
    os.sync()

    assert free_before - shutil.disk_usage(scratch).free < 10 * MIB
    extents = subprocess.run(
        ["filefrag", "-v", str(clone / "big.bin")], check=True, capture_output=True, text=True
    ).stdout
    assert "shared" in extents
    assert file_digests(clone) == {
        path.replace(str(base), str(clone)): digest for path, digest in file_digests(base).items()
    }


# --- ext4 and tmpfs: faithful copies -----------------------------------------------------------


@pytest.mark.root
@pytest.mark.parametrize("fstype", ["ext4", "tmpfs"])
def test_copy_clone_is_faithful(scratch_on, fstype):
    scratch = scratch_on(fstype)
    base, clone = scratch / "base", scratch / "clone"
    assert create_base(base) == "copy"
    make_awkward_tree(base)

    clone_root(base, clone, "copy")

    for relpath in ("usr/bin/sudo", "home/pi", "home/pi/notes", "tmp", "usr/bin/dash"):
        original, copied = os.lstat(base / relpath), os.lstat(clone / relpath)
        assert (copied.st_mode, copied.st_uid, copied.st_gid) == (
            original.st_mode,
            original.st_uid,
            original.st_gid,
        ), relpath
    assert os.readlink(clone / "usr/bin/sh") == "/usr/bin/dash"
    assert os.readlink(clone / "bin") == "usr/bin"
    assert os.stat(clone / "usr/bin/rbash").st_ino == os.stat(clone / "usr/bin/dash").st_ino
    sparse = os.stat(clone / "var.img")
    assert sparse.st_size == 32 * MIB + 3
    assert sparse.st_blocks * 512 < MIB
    assert os.getxattr(clone / "usr/bin/dash", "user.bakery") == b"kept"
    assert stat.S_ISFIFO(os.lstat(clone / "tmp/fifo").st_mode)


@pytest.mark.root
@pytest.mark.parametrize("fstype", ["ext4", "tmpfs"])
def test_copy_clone_keeps_every_entry_of_a_whole_os_root(scratch_on, fstype):
    scratch = scratch_on(fstype)
    base, clone = scratch / "base", scratch / "clone"
    create_base(base)
    make_awkward_tree(base)
    make_exotic_tree(base)
    listing = tree_listing(base)

    clone_root(base, clone, "copy")

    assert tree_listing(clone) == listing
    assert os.lstat(clone / "dev/null").st_rdev == os.makedev(1, 3)
    assert os.lstat(clone / "usr/sbin/crontab").st_ino == os.lstat(clone / "usr/bin/crontab").st_ino
    assert os.getxattr(clone / "usr/bin/ping", "security.capability") == CAP_NET_RAW
    assert stat.S_IMODE(os.lstat(clone / "usr/bin/crontab").st_mode) == 0o2755


@pytest.mark.root
def test_copy_clone_keeps_nanosecond_times_of_every_kind_of_entry(scratch_on):
    scratch = scratch_on("ext4")
    base, clone = scratch / "base", scratch / "clone"
    create_base(base)
    make_exotic_tree(base)

    clone_root(base, clone, "copy")

    for relpath in ("usr/bin/ping", "usr/bin", "dev/null", "usr/bin/python3", "."):
        copied = os.lstat(clone / relpath)
        assert (copied.st_atime_ns, copied.st_mtime_ns) == (ATIME_NS, MTIME_NS), relpath


@pytest.mark.root
def test_copy_clone_keeps_holes_in_the_middle_of_a_file(scratch_on):
    scratch = scratch_on("ext4")
    base, clone = scratch / "base", scratch / "clone"
    create_base(base)
    make_exotic_tree(base)

    clone_root(base, clone, "copy")

    copied = os.stat(clone / "usr/holes.img")
    assert copied.st_size == 40 * MIB
    assert copied.st_blocks * 512 <= os.stat(base / "usr/holes.img").st_blocks * 512 < MIB
    assert file_digests(clone / "usr") == {
        path.replace(str(base), str(clone)): digest
        for path, digest in file_digests(base / "usr").items()
    }


@pytest.mark.root
def test_copy_clone_has_the_base_acls_not_those_of_the_bakes_directory(scratch_on):
    scratch = scratch_on("ext4")
    bakes = scratch / "bakes"
    bakes.mkdir()
    base = scratch / "base"
    create_base(base)
    make_exotic_tree(base)
    os.setxattr(bakes, "system.posix_acl_default", ACL_WITH_NAMED_USER)

    clone_root(base, bakes / "clone", "copy")

    assert tree_listing(bakes / "clone") == tree_listing(base)


@pytest.mark.root
def test_copy_clone_copies_a_symlink_out_of_the_tree_as_a_symlink_and_leaves_its_target(
    scratch_on,
):
    scratch = scratch_on("ext4")
    host = scratch / "host"
    host.mkdir(mode=0o700)
    (host / "shadow").write_text("secret")
    host_listing = tree_listing(host)
    base, clone = scratch / "base", scratch / "clone"
    create_base(base)
    (base / "etc").symlink_to(host)
    (base / "shadow").symlink_to(host / "shadow")
    for link in (base / "etc", base / "shadow"):
        os.lchown(link, 1000, 1000)
        os.utime(link, ns=(ATIME_NS, MTIME_NS), follow_symlinks=False)

    clone_root(base, clone, "copy")

    assert sorted(path.name for path in clone.iterdir()) == ["etc", "shadow"]
    assert os.readlink(clone / "etc") == str(host)
    assert tree_listing(clone) == tree_listing(base)
    assert tree_listing(host) == host_listing


@pytest.mark.root
def test_failed_clone_leaves_nothing_behind(scratch_on):
    scratch = scratch_on("tmpfs")
    base = scratch / "base"
    create_base(base)
    (base / "big.bin").write_bytes(os.urandom(8 * MIB))
    with loop_filesystem("tmpfs", 4) as too_small:
        dest = too_small / "clone"

        with pytest.raises(RuntimeError, match="No space left"):
            clone_root(base, dest, "copy")

        assert list(too_small.iterdir()) == []


def boot_partition(top: Path) -> Path:
    (top / "overlays").mkdir(parents=True)
    (top / "kernel8.img").write_bytes(b"kernel" * 1000)
    (top / "overlays" / "vc4.dtbo").write_bytes(b"overlay")
    return top


def test_boot_files_are_linked_where_the_bakeform_is_on_the_same_filesystem(tmp_path):
    source = boot_partition(tmp_path / "bakeform" / "boot")
    (tmp_path / "bake").mkdir()
    clone_boot(source, tmp_path / "bake" / "boot")
    assert (tmp_path / "bake" / "boot" / "kernel8.img").samefile(source / "kernel8.img")
    assert (tmp_path / "bake" / "boot" / "overlays" / "vc4.dtbo").samefile(
        source / "overlays" / "vc4.dtbo"
    )


def test_boot_files_never_land_on_an_existing_destination(tmp_path):
    source = boot_partition(tmp_path / "bakeform" / "boot")
    taken = tmp_path / "bake" / "boot"
    taken.mkdir(parents=True)
    (taken / "kernel8.img").write_bytes(b"someone else's")
    with pytest.raises(FileExistsError):
        clone_boot(source, taken)
    assert (taken / "kernel8.img").read_bytes() == b"someone else's"


@pytest.mark.root
def test_boot_files_are_copied_where_links_cannot_reach(tmp_path):
    source = boot_partition(tmp_path / "bakeform" / "boot")
    with loop_filesystem("tmpfs", 4) as elsewhere:
        clone_boot(source, elsewhere / "boot")
        copied = elsewhere / "boot" / "kernel8.img"
        assert copied.read_bytes() == (source / "kernel8.img").read_bytes()
        assert not copied.samefile(source / "kernel8.img")
        assert (elsewhere / "boot" / "overlays" / "vc4.dtbo").read_bytes() == b"overlay"


@pytest.mark.root
def test_clone_into_a_missing_directory_fails_and_leaves_nothing(tmp_path):
    base = tmp_path / "base"
    create_base(base)
    dest = tmp_path / "no-such-bake" / "root"

    with pytest.raises(RuntimeError):
        clone_root(base, dest, "copy")

    assert not dest.parent.exists()


def test_clone_never_overwrites_an_existing_root(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "clone").mkdir()

    with pytest.raises(FileExistsError):
        clone_root(tmp_path / "base", tmp_path / "clone", "copy")


# --- deleting ----------------------------------------------------------------------------------


def test_delete_tree_does_not_follow_symlinks_out_of_the_root(tmp_path):
    outside = tmp_path / "host"
    outside.mkdir()
    (outside / "precious").write_text("keep me")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/link-to-host").symlink_to(outside)
    (root / "host-file").symlink_to(outside / "precious")

    delete_tree(root)

    assert not root.exists()
    assert (outside / "precious").read_text() == "keep me"


def test_deleting_a_missing_root_is_fine(tmp_path):
    delete_tree(tmp_path / "gone")
    delete_tree(tmp_path / "gone")


# --- seasoning ---------------------------------------------------------------------------------


@pytest.fixture
def pi_base(tmp_path) -> Path:
    base = tmp_path / "base"
    make_pi_root(base)
    return base


def seasoned_clone(base: Path, name: str) -> Path:
    clone = base.with_name(name)
    clone_root(base, clone, "copy")
    season_root(clone, hostname=name, resolv_conf=RESOLV)
    return clone


@pytest.mark.root
def test_seasoning_sets_hostname_and_hosts_line(pi_base):
    clone = seasoned_clone(pi_base, "pi-01")

    assert (clone / "etc/hostname").read_text() == "pi-01\n"
    hosts = (clone / "etc/hosts").read_text()
    assert "127.0.1.1\tpi-01\n" in hosts
    assert "raspberrypi" not in hosts
    assert hosts.startswith("127.0.0.1\tlocalhost\n")


@pytest.mark.root
def test_each_clone_gets_its_own_machine_id(pi_base):
    first, second = seasoned_clone(pi_base, "pi-01"), seasoned_clone(pi_base, "pi-02")

    ids = {(root / "etc/machine-id").read_text() for root in (pi_base, first, second)}
    assert len(ids) == 3
    for root in (first, second):
        machine_id = (root / "etc/machine-id").read_text()
        assert re.fullmatch(r"[0-9a-f]{32}\n", machine_id)
        assert (root / "var/lib/dbus/machine-id").read_text() == machine_id


@pytest.mark.root
def test_each_clone_gets_fresh_valid_ssh_host_keys(pi_base):
    first, second = seasoned_clone(pi_base, "pi-01"), seasoned_clone(pi_base, "pi-02")

    for kind in ("ed25519", "ecdsa"):
        key = f"etc/ssh/ssh_host_{kind}_key"
        fingerprints = {key_fingerprint(root / key) for root in (pi_base, first, second)}
        assert len(fingerprints) == 3
        for root in (first, second):
            private, public = os.stat(root / key), os.stat(root / f"{key}.pub")
            assert (stat.S_IMODE(private.st_mode), private.st_uid, private.st_gid) == (0o600, 0, 0)
            assert stat.S_IMODE(public.st_mode) == 0o644
            assert key_fingerprint(root / f"{key}.pub") == key_fingerprint(root / key)
            assert (root / f"{key}.pub").read_text().rstrip().endswith(f"root@{root.name}")
    assert sorted(p.name for p in (first / "etc/ssh").iterdir()) == sorted(
        p.name for p in (pi_base / "etc/ssh").iterdir()
    )


@pytest.mark.root
def test_image_without_host_keys_gets_ed25519_and_ecdsa(pi_base):
    for key in (pi_base / "etc/ssh").iterdir():
        key.unlink()

    clone = seasoned_clone(pi_base, "pi-01")

    assert sorted(p.name for p in (clone / "etc/ssh").iterdir()) == [
        "ssh_host_ecdsa_key",
        "ssh_host_ecdsa_key.pub",
        "ssh_host_ed25519_key",
        "ssh_host_ed25519_key.pub",
    ]


@pytest.mark.root
def test_seasoning_drops_sd_card_lines_from_fstab(pi_base):
    clone = seasoned_clone(pi_base, "pi-01")

    fstab = (clone / "etc/fstab").read_text()
    assert "PARTUUID" not in fstab
    assert fstab.startswith("proc ")
    assert "tmpfs /tmp tmpfs" in fstab
    assert "# a swapfile" in fstab


@pytest.mark.root
def test_seasoning_replaces_the_resolv_conf_symlink_with_the_configured_file(pi_base):
    clone = seasoned_clone(pi_base, "pi-01")

    resolv = clone / "etc/resolv.conf"
    assert not resolv.is_symlink()
    assert resolv.read_text() == RESOLV


@pytest.mark.root
def test_seasoning_twice_gives_a_new_identity_and_keeps_the_tree_sound(pi_base):
    clone = seasoned_clone(pi_base, "pi-01")
    machine_id = (clone / "etc/machine-id").read_text()

    season_root(clone, hostname="pi-02", resolv_conf=RESOLV)

    assert (clone / "etc/hostname").read_text() == "pi-02\n"
    assert (clone / "etc/hosts").read_text().count("127.0.1.1") == 1
    assert (clone / "etc/machine-id").read_text() != machine_id
    assert len(list((clone / "etc/ssh").iterdir())) == 4
    assert not [p for p in clone.rglob("*.bakery-*")]


def test_hosts_line_is_added_after_localhost_when_the_image_has_none():
    hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost\n"

    assert hosts_with_hostname(hosts, "pi-07") == (
        "127.0.0.1\tlocalhost\n127.0.1.1\tpi-07\n::1\tlocalhost\n"
    )


def test_fstab_keeps_other_disks_but_drops_the_sd_card_by_any_name():
    fstab = (
        "proc /proc proc defaults 0 0\n"
        "UUID=1234-ABCD /boot/firmware vfat defaults 0 2\n"
        "UUID=0b8ef36e-1a6c-4b3e-9b8b-5a7b5b7d3f00 / ext4 defaults 0 1\n"
        "LABEL=rootfs / ext4 defaults 0 1\n"
        "/dev/mmcblk0p1 /boot vfat defaults 0 2\n"
        "UUID=aaaa-bbbb /srv/usb ext4 defaults,nofail 0 2\n"
        "server:/exports/data /data nfs defaults 0 0\n"
    )

    assert fstab_without_sd_card(fstab) == (
        "proc /proc proc defaults 0 0\n"
        "UUID=aaaa-bbbb /srv/usb ext4 defaults,nofail 0 2\n"
        "server:/exports/data /data nfs defaults 0 0\n"
    )


# --- seasoning a hostile image -----------------------------------------------------------------
# Decision: a symlinked *directory* (/etc, /etc/ssh, /var/lib/dbus) is refused with
# SeasoningError before anything is written through it; a symlinked *file* seasoning writes
# (/etc/hostname -> /etc/shadow) is replaced by a regular file inside the root, never followed.


@pytest.fixture
def host(tmp_path) -> Path:
    """A stand-in for the host's /etc, next to the root, that seasoning must not touch."""
    decoy = tmp_path / "host-etc"
    decoy.mkdir()
    for name in ("hostname", "hosts", "shadow", "passwd", "machine-id", "fstab"):
        (decoy / name).write_text(f"host {name}: secret\n")
    (decoy / "ssh").mkdir()
    (decoy / "ssh/ssh_host_ed25519_key").write_text("host private key\n")
    return decoy


@pytest.mark.root
@pytest.mark.parametrize("target", ["absolute", "relative"])
def test_symlinked_etc_is_refused_and_nothing_outside_is_written(pi_base, host, target):
    shutil.rmtree(pi_base / "etc")
    link = str(host) if target == "absolute" else "../../../../../../../../" + str(host)
    (pi_base / "etc").symlink_to(link)
    before = file_digests(host)

    with pytest.raises(SeasoningError, match="symlink"):
        season_root(pi_base, hostname="pi-01", resolv_conf=RESOLV)

    assert file_digests(host) == before
    assert not list(host.glob(".*"))


@pytest.mark.root
def test_etc_linked_to_the_real_host_etc_is_refused_and_the_host_is_untouched(pi_base):
    host_files = [Path("/etc", name) for name in ("hostname", "hosts", "machine-id", "fstab")]
    before = {path: path.read_bytes() for path in host_files if path.is_file()}
    shutil.rmtree(pi_base / "etc")
    (pi_base / "etc").symlink_to("/etc")

    with pytest.raises(SeasoningError, match="symlink"):
        season_root(pi_base, hostname="pi-01", resolv_conf=RESOLV)

    assert {path: path.read_bytes() for path in before} == before
    assert not list(Path("/etc").glob(".*.bakery-*"))


@pytest.mark.root
def test_symlinked_ssh_directory_is_refused(pi_base, host):
    shutil.rmtree(pi_base / "etc/ssh")
    (pi_base / "etc/ssh").symlink_to(host / "ssh")
    before = file_digests(host)

    with pytest.raises(SeasoningError):
        season_root(pi_base, hostname="pi-01", resolv_conf=RESOLV)

    assert file_digests(host) == before
    assert sorted(p.name for p in (host / "ssh").iterdir()) == ["ssh_host_ed25519_key"]


@pytest.mark.root
def test_symlinked_files_are_replaced_inside_the_root_not_followed(pi_base, host):
    etc = pi_base / "etc"
    links = {
        "hostname": host / "shadow",
        "hosts": Path("../../../../../../../..", *host.parts[1:], "passwd"),
        "machine-id": host / "machine-id",
        "fstab": host / "fstab",
    }
    for name, target in links.items():
        (etc / name).unlink()
        (etc / name).symlink_to(target)
    before = file_digests(host)

    season_root(pi_base, hostname="pi-01", resolv_conf=RESOLV)

    assert file_digests(host) == before
    assert (etc / "hostname").read_text() == "pi-01\n"
    assert "secret" not in (etc / "hosts").read_text()
    assert not (etc / "hosts").is_symlink() and not (etc / "machine-id").is_symlink()
