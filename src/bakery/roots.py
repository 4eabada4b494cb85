"""Per-bake root trees: cheap clones of a bakeform's root, seasoned with their own identity.

The original bakery copied a whole root (``rsync -xa``) for every bake. Here a bake costs
what the filesystem under the data directory allows: a btrfs snapshot (constant time), an
xfs/btrfs reflink copy (metadata only) or, elsewhere, a plain but faithful copy.

A root comes from an uploaded image, so its contents are hostile: every write made while
seasoning walks the tree one component at a time with ``O_NOFOLLOW`` (see `write_in_root`)
so that a symlink planted in the image can never redirect a write onto the host.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import secrets
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, get_args

from bakery import identifiers

CloneMethod = Literal["snapshot", "reflink", "copy"]
CLONE_METHODS: tuple[CloneMethod, ...] = get_args(CloneMethod)

#: Inode number of the top directory of every btrfs subvolume (BTRFS_FIRST_FREE_OBJECTID).
BTRFS_SUBVOLUME_INODE = 256
#: ioctl that shares one file's extents with another (linux/fs.h), what ``cp --reflink`` uses.
FICLONE = 0x40049409

#: SSH host key types ssh-keygen can regenerate; any other ``ssh_host_*_key`` is only removed.
SSH_KEY_TYPES = ("rsa", "ecdsa", "ed25519", "dsa")
#: Generated when an image ships no host key (Raspberry Pi OS images don't). RSA is left
#: out: it costs ~0.6 s per bake against ~5 ms for these two, and every current client
#: accepts ed25519.
DEFAULT_SSH_KEY_TYPES = ("ed25519", "ecdsa")
SSH_HOST_KEY_RE = re.compile(r"^ssh_host_([a-z0-9]+)_key(\.pub)?$")

#: Largest file seasoning will read back from a root (hosts, fstab): these are small text
#: files, and a hostile image must not make the server read gigabytes.
MAX_READ_BYTES = 1024 * 1024

#: fstab mount points that are partitions of the Pi's SD card when mounted by UUID.
SD_CARD_MOUNT_POINTS = ("/", "/boot", "/boot/firmware")
SD_CARD_DEVICE_RE = re.compile(r"^(PARTUUID=.*|LABEL=(rootfs|bootfs)|/dev/mmcblk.*)$")

DEFAULT_HOSTS = "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n"


class RootError(RuntimeError):
    """A filesystem tool failed while cloning or deleting a root; the message carries
    the tool's own explanation."""


class SeasoningError(ValueError):
    """A root cannot be seasoned safely, e.g. because the image put a symlink where a
    directory of the root should be."""


# --- which clone the filesystem allows ------------------------------------------------------


def clone_method_for(path: Path) -> CloneMethod:
    """The cheapest clone of `path` (existing or about to be created) its filesystem allows.

    On btrfs a snapshot needs `path` to be a subvolume: an existing plain directory there
    gets reflink copies instead.
    """
    probe_dir = _nearest_existing_dir(path)
    if _filesystem_type(probe_dir) == "btrfs":
        if not os.path.lexists(path) or _is_subvolume(path):
            return "snapshot"
        return "reflink"
    return "reflink" if _reflink_works(probe_dir) else "copy"


def create_base(path: Path) -> CloneMethod:
    """Create `path` as an empty directory a bakeform's root tree is then extracted into.

    On btrfs it is a subvolume, so that every bake of it can be a snapshot. Returns the
    method bakes of this base will use.
    """
    if os.path.lexists(path):
        raise FileExistsError(errno.EEXIST, "base already exists", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    method = clone_method_for(path)
    if method == "snapshot":
        _run(["btrfs", "subvolume", "create", str(path)])
    else:
        path.mkdir(mode=0o755)
    return method


def _nearest_existing_dir(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(errno.ENOENT, "no existing directory above", str(path))


def _filesystem_type(path: Path) -> str:
    return _run(["stat", "--file-system", "--format=%T", str(path)])


def _is_subvolume(path: Path) -> bool:
    return _has_subvolume_inode(path) and _filesystem_type(path) == "btrfs"


def _has_subvolume_inode(path: Path) -> bool:
    """True for every btrfs subvolume; elsewhere any directory may have this inode, so
    the filesystem must be known to be btrfs."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_ino == BTRFS_SUBVOLUME_INODE


def _reflink_works(directory: Path) -> bool:
    """Try FICLONE on a probe file: the only reliable answer (xfs may be made without
    reflink, and other filesystems gain it over time)."""
    with tempfile.TemporaryDirectory(prefix=".bakery-reflink-probe-", dir=directory) as tmp:
        source, target = Path(tmp, "source"), Path(tmp, "target")
        source.write_bytes(b"\0" * 4096)
        with open(source, "rb") as src, open(target, "wb") as dst:
            try:
                fcntl.ioctl(dst.fileno(), FICLONE, src.fileno())
            except OSError:
                return False
    return True


# --- cloning and deleting -------------------------------------------------------------------


def clone_root(base: Path, dest: Path, method: CloneMethod) -> None:
    """Make `dest` (which must not exist) a writable copy of `base` using `method`.

    Copies are made under a hidden sibling name and renamed into place, so `dest` either
    is a complete clone or does not exist, even after a crash half-way.
    """
    if method not in CLONE_METHODS:
        raise ValueError(f"unknown clone method {method!r}")
    if os.path.lexists(dest):
        raise FileExistsError(errno.EEXIST, "clone destination already exists", str(dest))
    if method == "snapshot":
        _run(["btrfs", "subvolume", "snapshot", str(base), str(dest)])
        return
    staging = dest.with_name(f".{dest.name}.partial-{secrets.token_hex(4)}")
    try:
        if method == "reflink":
            _reflink_tree(base, staging)
        else:
            _copy_tree(base, staging)
        os.rename(staging, dest)
    except BaseException:
        delete_tree(staging)
        raise


def _reflink_tree(source: Path, target: Path) -> None:
    """``cp -a --reflink``: keeps owners, modes, times, symlinks as they are, hard links,
    holes, xattrs and ACLs, and shares the data extents instead of copying them."""
    _run(
        [
            "cp",
            "--archive",
            "--no-target-directory",
            "--reflink=always",
            "--",
            str(source),
            str(target),
        ]
    )


def clone_boot(source: Path, dest: Path) -> None:
    """Give a bake its own copy of its bakeform's boot files (``dest`` must not exist).

    Hard links where both sides share a filesystem: a bakeform's files are never changed
    in place (replacing a bakeform swaps its whole directory), so the links cost no space
    and a live bake keeps booting the kernel and firmware that match its root after its
    bakeform is replaced. A copy where links cannot reach (another filesystem, another
    bind mount of the same one)."""
    if os.path.lexists(dest):
        raise FileExistsError(errno.EEXIST, "boot files destination already exists", str(dest))

    def cp(*options: str) -> None:
        _run(["cp", "--archive", *options, "--no-target-directory", "--", str(source), str(dest)])

    try:
        cp("--link")
    except RootError:
        delete_tree(dest)
        cp()


# --- copying a tree where nothing can be shared ---------------------------------------------

#: Threads copying file contents. ``sendfile`` runs without the GIL, so several files are
#: read and written at once: with cold caches the disk, not one thread's read-then-write,
#: sets the pace (rsync gets two, its sender and receiver; `cp -a` one). More than 4 did
#: not measure faster on 2 cores.
COPY_THREADS = 4
#: Regular files handed to a copy thread at a time: few hand-overs, yet small enough that
#: the threads stay balanced by bytes whatever mix of small and large files the root has.
COPY_BATCH_FILES = 64
COPY_BATCH_BYTES = 16 * 1024 * 1024
#: Largest single ``sendfile`` call.
COPY_CHUNK_BYTES = 64 * 1024 * 1024

#: A file of the source tree: its path, its path in the copy, and its ``lstat``.
_Item = tuple[str, str, os.stat_result]


def _copy_tree(source: Path, target: Path) -> None:
    """A copy as faithful as ``cp -a`` (owners, modes with setuid/sticky bits, nanosecond
    times, symlinks as they are, hard links, holes, FIFOs and device nodes, xattrs and so
    ACLs and file capabilities), but faster: file contents are copied by several threads
    while the tree is still being walked.

    The source is an uploaded image: no symlink in it is ever followed, and every entry of
    the copy is created fresh (``O_EXCL``) in directories this copy made.
    """
    try:
        _TreeCopy(str(source), str(target)).run()
    except OSError as exc:
        raise RootError(f"copying {source} to {target}: {exc}") from exc


class _TreeCopy:
    """One copy of `source` to `target`: directories are made as the walk finds them,
    regular files go to the copy threads, and whatever must wait for those (symlinks and
    special files, then further names of any inode already copied, then every directory's
    own metadata, bottom-up so that filling a directory cannot change its times) is
    collected for afterwards."""

    def __init__(self, source: str, target: str) -> None:
        self.source, self.target = source, target
        self.directories: list[_Item] = []
        self.symlinks: list[_Item] = []
        self.specials: list[_Item] = []
        self.hard_links: list[tuple[str, str]] = []
        self.first_copies: dict[tuple[int, int], str] = {}

    def run(self) -> None:
        top = os.lstat(self.source)  # before the walk reads it and moves its atime
        if not stat.S_ISDIR(top.st_mode):
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", self.source)
        os.mkdir(self.target, 0o700)
        _drop_inherited_acls(self.target)
        with ThreadPoolExecutor(COPY_THREADS, thread_name_prefix="bakery-copy") as pool:
            try:
                copies = [pool.submit(_copy_regular_files, batch) for batch in self._walk()]
                for copy in copies:
                    copy.result()
            except BaseException:
                pool.shutdown(cancel_futures=True)
                raise
        for source, target, info in self.symlinks:
            os.symlink(os.readlink(source), target)
            _apply_metadata(source, target, info)
        for source, target, info in self.specials:
            os.mknod(target, info.st_mode, info.st_rdev)
            _apply_metadata(source, target, info)
        for existing, link in self.hard_links:
            os.link(existing, link, follow_symlinks=False)
        for source, target, info in reversed(self.directories):
            _apply_metadata(source, target, info)
        _apply_metadata(self.source, self.target, top)

    def _walk(self) -> Iterator[list[_Item]]:
        """Batches of regular files to copy, yielded while the walk goes on; directories
        are made as they are found, so a batch's files always have their directory."""
        batch: list[_Item] = []
        batch_bytes = 0
        pending = [(self.source, self.target)]
        while pending:
            for item in self._scan(*pending.pop()):
                source, target, info = item
                if stat.S_ISDIR(info.st_mode):
                    os.mkdir(target, 0o700)
                    self.directories.append(item)
                    pending.append((source, target))
                elif self._is_another_link(target, info):
                    continue
                elif stat.S_ISREG(info.st_mode):
                    batch.append(item)
                    batch_bytes += info.st_size
                    if len(batch) >= COPY_BATCH_FILES or batch_bytes >= COPY_BATCH_BYTES:
                        yield batch
                        batch, batch_bytes = [], 0
                elif stat.S_ISLNK(info.st_mode):
                    self.symlinks.append(item)
                else:
                    self.specials.append(item)
        if batch:
            yield batch

    @staticmethod
    def _scan(source_dir: str, target_dir: str) -> list[_Item]:
        """The entries of one directory, in inode order: on ext4 that is roughly the
        order of the inodes (and often the data) on disk, so reads seek less."""
        with os.scandir(source_dir) as entries:
            items = [
                (
                    entry.path,
                    os.path.join(target_dir, entry.name),
                    entry.stat(follow_symlinks=False),
                )
                for entry in entries
            ]
        items.sort(key=lambda item: item[2].st_ino)
        return items

    def _is_another_link(self, target: str, info: os.stat_result) -> bool:
        """True if `info` is an inode already met under another name: `target` is then
        made a hard link to that name's copy, once the copy exists."""
        if info.st_nlink < 2:
            return False
        key = (info.st_dev, info.st_ino)
        existing = self.first_copies.setdefault(key, target)
        if existing == target:
            return False
        self.hard_links.append((existing, target))
        return True


def _drop_inherited_acls(directory: str) -> None:
    """A new directory inherits its parent's default ACL (and passes it on to everything
    made in it); the copy must have the source's ACLs only, which come last."""
    for name in _xattr_names(directory, {}):
        if name.startswith("system.posix_acl_"):
            os.removexattr(directory, name)


def _copy_regular_files(batch: list[_Item]) -> None:
    for source, target, info in batch:
        _copy_regular_file(source, target, info)


def _copy_regular_file(source: str, target: str, info: os.stat_result) -> None:
    source_fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        target_fd = os.open(target, flags, 0o600)
        try:
            _copy_contents(source_fd, target_fd, info)
            _apply_metadata(source_fd, target_fd, info)
        finally:
            os.close(target_fd)
    finally:
        os.close(source_fd)


def _copy_contents(source_fd: int, target_fd: int, info: os.stat_result) -> None:
    """Copy in the kernel; a file with fewer blocks than its size has holes, and only
    its data ranges (``SEEK_DATA``/``SEEK_HOLE``) are copied so the holes stay holes."""
    if info.st_blocks * 512 >= info.st_size:
        _copy_range(source_fd, target_fd, 0, info.st_size)
        return
    offset = 0
    while offset < info.st_size:
        try:
            data = os.lseek(source_fd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # no data after offset: the rest is a hole
                raise
            break
        offset = os.lseek(source_fd, data, os.SEEK_HOLE)
        _copy_range(source_fd, target_fd, data, offset - data)
    os.ftruncate(target_fd, info.st_size)


def _copy_range(source_fd: int, target_fd: int, offset: int, length: int) -> None:
    """``sendfile`` rather than ``copy_file_range``: as fast (on a filesystem without
    reflinks both are the kernel's splice) and it also works across filesystems."""
    os.lseek(target_fd, offset, os.SEEK_SET)
    end = offset + length
    while offset < end:
        copied = os.sendfile(target_fd, source_fd, offset, min(end - offset, COPY_CHUNK_BYTES))
        if copied == 0:  # the source shrank while being copied
            return
        offset += copied


def _apply_metadata(source: str | int, target: str | int, info: os.stat_result) -> None:
    """Give `target` the owner, xattrs, mode and times of `source`, in the only order that
    keeps them all: chown clears setuid bits and file capabilities, and every change but
    the times' own moves the times. Symlinks are never followed (and have no mode)."""
    is_symlink = stat.S_ISLNK(info.st_mode)
    nofollow = {"follow_symlinks": False} if is_symlink else {}
    os.chown(target, info.st_uid, info.st_gid, **nofollow)
    _copy_xattrs(source, target, nofollow)
    if not is_symlink:
        os.chmod(target, stat.S_IMODE(info.st_mode))
    os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns), **nofollow)


def _copy_xattrs(source: str | int, target: str | int, nofollow: dict[str, bool]) -> None:
    """Every xattr (ACLs and file capabilities are xattrs too); one a filesystem cannot
    hold (``ENOTSUP``) is left out, as ``cp -a`` does."""
    read_nofollow = {} if isinstance(source, int) else {"follow_symlinks": False}
    for name in _xattr_names(source, read_nofollow):
        try:
            os.setxattr(target, name, os.getxattr(source, name, **read_nofollow), **nofollow)
        except OSError as exc:
            if exc.errno != errno.ENOTSUP:
                raise


def _xattr_names(path: str | int, nofollow: dict[str, bool]) -> list[str]:
    try:
        return os.listxattr(path, **nofollow)
    except OSError as exc:
        if exc.errno != errno.ENOTSUP:
            raise
        return []


def delete_tree(path: Path) -> None:
    """Remove a root, whatever clone made it; a missing `path` is already deleted.

    Subvolumes are dropped with ``btrfs subvolume delete`` (instant, even for a snapshot
    of a full OS); any other tree is removed without ever following a symlink.
    """
    if not os.path.lexists(path):
        return
    if _is_subvolume(path):
        _delete_subvolume(path)
    elif path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _delete_subvolume(path: Path) -> None:
    """btrfs refuses to delete a subvolume holding another one, so on that refusal the
    nested ones (e.g. made by software inside the bake) are deleted first."""
    try:
        _run(["btrfs", "subvolume", "delete", str(path)])
        return
    except RootError:
        nested = list(_nested_subvolumes(path))
        if not nested:
            raise
    for subvolume in reversed(nested):
        _run(["btrfs", "subvolume", "delete", str(subvolume)])
    _run(["btrfs", "subvolume", "delete", str(path)])


def _nested_subvolumes(path: Path) -> Iterator[Path]:
    """Subvolumes below the subvolume `path`, parents before children; symlinks are not
    followed."""
    for directory, subdirs, _files in os.walk(path):
        for name in subdirs:
            candidate = Path(directory, name)
            if _has_subvolume_inode(candidate):
                yield candidate


def _run(args: list[str]) -> str:
    try:
        done = subprocess.run(args, check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as exc:
        raise RootError(f"{' '.join(args)}: {exc.stderr.strip() or exc}") from None
    return done.stdout.strip()


# --- writing into a hostile tree ------------------------------------------------------------

NOFOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _parts(relpath: str) -> list[str]:
    """The components of a path inside the root; ``..`` and ``.`` are refused outright."""
    parts = [part for part in relpath.split("/") if part]
    if not parts or any(part in (".", "..") for part in parts):
        raise SeasoningError(f"{relpath!r} is not a plain path inside the root")
    return parts


@contextmanager
def open_in_root(root: Path, reldir: str, *, create: bool = False) -> Iterator[int]:
    """Yield a descriptor of directory `reldir` of `root`, never leaving the root.

    Each component is opened relative to the previous one with ``O_NOFOLLOW``, so a
    symlink anywhere on the way (``/etc`` -> the host's ``/etc``) is refused with
    SeasoningError instead of being followed. Missing directories are made if `create`.
    """
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in _parts(reldir) if reldir.strip("/") else []:
            child = _open_child_dir(fd, part, create=create, where=f"{reldir} in {root}")
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def _open_child_dir(parent_fd: int, name: str, *, create: bool, where: str) -> int:
    if create:
        try:
            os.mkdir(name, 0o755, dir_fd=parent_fd)
        except FileExistsError:
            pass
    try:
        return os.open(name, NOFOLLOW_DIR, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise SeasoningError(f"{name!r} ({where}) is a symlink or not a directory") from None
        raise


def write_in_root(
    root: Path, relpath: str, data: bytes, *, mode: int = 0o644, uid: int = 0, gid: int = 0
) -> None:
    """Make `relpath` of `root` a regular file holding `data`, owned by `uid`:`gid`.

    The file is written under a temporary name and renamed over the old entry, so an
    old symlink at `relpath` is replaced, never followed, and no existing inode (which
    could be hard-linked elsewhere in the tree) is modified.
    """
    parts = _parts(relpath)
    with open_in_root(root, "/".join(parts[:-1]), create=True) as dir_fd:
        temp_name = f".{parts[-1]}.bakery-{secrets.token_hex(4)}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(temp_name, flags, 0o600, dir_fd=dir_fd)
        try:
            with os.fdopen(fd, "wb") as temp:
                temp.write(data)
                os.fchown(temp.fileno(), uid, gid)
                os.fchmod(temp.fileno(), mode)
            _rename_over(temp_name, parts[-1], dir_fd)
        except BaseException:
            os.unlink(temp_name, dir_fd=dir_fd)
            raise


def _rename_over(temp_name: str, name: str, dir_fd: int) -> None:
    try:
        os.rename(temp_name, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except (IsADirectoryError, OSError) as exc:
        if exc.errno not in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
            raise
        raise SeasoningError(f"{name!r} is a directory in the image, not a file") from None


def read_in_root(root: Path, relpath: str) -> bytes | None:
    """The contents of `relpath` if it is a regular file of the root, else None.

    A symlink is treated as absent: following it could read a host file (``/etc/shadow``)
    and copy it into a root its uploader can read. Device nodes and FIFOs are not even
    opened.
    """
    parts = _parts(relpath)
    try:
        with open_in_root(root, "/".join(parts[:-1])) as dir_fd:
            if not stat.S_ISREG(os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False).st_mode):
                return None
            fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as file:
        data = file.read(MAX_READ_BYTES + 1)
    if len(data) > MAX_READ_BYTES:
        raise SeasoningError(f"{relpath} in {root} is larger than {MAX_READ_BYTES} bytes")
    return data


# --- seasoning ------------------------------------------------------------------------------


def season_root(root: Path, *, hostname: str, resolv_conf: str) -> None:
    """Give a freshly cloned root its own identity (pi-netboot.md §3.3).

    Each clone of a bakeform starts with the image's hostname, machine-id and SSH host
    keys; two Pis sharing them confuse DHCP, journald, and every SSH client. The SD card
    lines of fstab would make systemd wait for a device a netbooted Pi lacks, and
    NetworkManager won't write resolv.conf for an NFS-rooted Pi.

    Symlinked directories in the root raise SeasoningError; a symlink in place of a file
    seasoning writes (``/etc/hostname`` -> ``/etc/shadow``) is replaced by a regular file.
    Seasoning again gives the root a new identity again.
    """
    hostname = identifiers.hostname(hostname)
    write_in_root(root, "etc/hostname", f"{hostname}\n".encode())
    _season_hosts(root, hostname)
    _season_machine_id(root)
    _season_ssh_host_keys(root, hostname)
    _season_fstab(root)
    write_in_root(root, "etc/resolv.conf", resolv_conf.encode())


def _season_hosts(root: Path, hostname: str) -> None:
    text = _read_text(root, "etc/hosts")
    write_in_root(root, "etc/hosts", hosts_with_hostname(text or DEFAULT_HOSTS, hostname).encode())


def hosts_with_hostname(hosts: str, hostname: str) -> str:
    """`hosts` with its 127.0.1.1 line naming `hostname` (Debian's convention for the
    machine's own name), added after the localhost line if the image has none."""
    own_line = f"127.0.1.1\t{hostname}"
    lines = hosts.splitlines()
    if any(_first_field(line) == "127.0.1.1" for line in lines):
        lines = [own_line if _first_field(line) == "127.0.1.1" else line for line in lines]
    else:
        localhost = [i for i, line in enumerate(lines) if _first_field(line) == "127.0.0.1"]
        lines.insert(localhost[0] + 1 if localhost else len(lines), own_line)
    return "\n".join(lines) + "\n"


def _season_machine_id(root: Path) -> None:
    """A new random id; dbus keeps its own copy in older images (else a symlink to it)."""
    machine_id = f"{secrets.token_hex(16)}\n".encode()
    write_in_root(root, "etc/machine-id", machine_id, mode=0o444)
    if _is_regular_file(root, "var/lib/dbus/machine-id"):
        write_in_root(root, "var/lib/dbus/machine-id", machine_id, mode=0o444)


def _season_ssh_host_keys(root: Path, hostname: str) -> None:
    """Replace the image's host keys by new ones of the same types. Images without
    ``/etc/ssh`` have no SSH server and get none."""
    try:
        with open_in_root(root, "etc/ssh") as ssh_dir:
            old_keys = [name for name in os.listdir(ssh_dir) if SSH_HOST_KEY_RE.match(name)]
            for name in old_keys:
                os.unlink(name, dir_fd=ssh_dir)
    except FileNotFoundError:
        return
    present = {SSH_HOST_KEY_RE.fullmatch(name)[1] for name in old_keys}
    key_types = [kind for kind in SSH_KEY_TYPES if kind in present] or DEFAULT_SSH_KEY_TYPES
    for name, data, mode in _generate_ssh_host_keys(key_types, comment=f"root@{hostname}"):
        write_in_root(root, f"etc/ssh/{name}", data, mode=mode)


def _generate_ssh_host_keys(
    key_types: list[str] | tuple[str, ...], *, comment: str
) -> list[tuple[str, bytes, int]]:
    """New host keys as ``(file name, contents, mode)``, private and public.

    ssh-keygen writes by path, so it works in a private directory off the root; the
    types are generated in parallel because RSA alone takes most of a second.
    """
    keygen = shutil.which("ssh-keygen")
    if keygen is None:
        raise SeasoningError("ssh-keygen not found: install openssh-client")
    with tempfile.TemporaryDirectory(prefix="bakery-hostkeys-") as tmp:
        jobs = {
            kind: subprocess.Popen(
                [keygen, "-q", "-N", "", "-t", kind, "-C", comment, "-f", _key_path(tmp, kind)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            for kind in key_types
        }
        errors = {kind: job.communicate()[1] for kind, job in jobs.items()}
        for kind, job in jobs.items():
            if job.returncode != 0:
                raise SeasoningError(f"ssh-keygen -t {kind}: {errors[kind].decode().strip()}")
        return [key for kind in key_types for key in _read_key_pair(tmp, kind)]


def _key_path(directory: str, kind: str) -> str:
    return os.path.join(directory, f"ssh_host_{kind}_key")


def _read_key_pair(directory: str, kind: str) -> list[tuple[str, bytes, int]]:
    private = Path(_key_path(directory, kind))
    public = private.with_name(private.name + ".pub")
    return [(private.name, private.read_bytes(), 0o600), (public.name, public.read_bytes(), 0o644)]


def _season_fstab(root: Path) -> None:
    text = _read_text(root, "etc/fstab")
    if text is not None:
        write_in_root(root, "etc/fstab", fstab_without_sd_card(text).encode())


def fstab_without_sd_card(fstab: str) -> str:
    """`fstab` minus the lines mounting the SD card (a netbooted Pi has none, and systemd
    would wait for it); proc, tmpfs, NFS lines and comments stay."""
    kept = [line for line in fstab.splitlines() if not _mounts_sd_card(line)]
    return "\n".join(kept) + "\n" if kept else ""


def _mounts_sd_card(line: str) -> bool:
    fields = line.split()
    if not fields or fields[0].startswith("#"):
        return False
    if SD_CARD_DEVICE_RE.match(fields[0]):
        return True
    if not fields[0].startswith("UUID=") or len(fields) < 2:
        return False
    return (fields[1].rstrip("/") or "/") in SD_CARD_MOUNT_POINTS


def _first_field(line: str) -> str:
    fields = line.split()
    return fields[0] if fields else ""


def _read_text(root: Path, relpath: str) -> str | None:
    data = read_in_root(root, relpath)
    return None if data is None else data.decode("utf-8", errors="surrogateescape")


def _is_regular_file(root: Path, relpath: str) -> bool:
    parts = _parts(relpath)
    try:
        with open_in_root(root, "/".join(parts[:-1])) as dir_fd:
            info = os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return stat.S_ISREG(info.st_mode)
