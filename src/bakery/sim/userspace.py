"""A simulated Pi's userspace: the root Bakery exported to it, booted by its own init.

Once a simulated Pi's bootloader has read its root over NFS from the Pi's address, its
"kernel" starts the root's init (systemd), which runs what the root runs at boot: the
disk agent, the boot report, the bosh-agent and monit of a stemcell. This machine's
kernel stands in for the Pi's, so the init gets what a kernel gives a container: its
own PID, mount, UTS, IPC and cgroup namespaces inside the Pi's network namespace, the
bake's root directory as ``/`` (the directory the NFS export serves: this kernel has no
NFS client), ``/proc`` with ``/proc/sys`` read-only and a read-only ``/sys`` (so the
root's sysctl and udev units do not touch the host), and tmpfs ``/run``, ``/tmp`` and
``/dev``, the last holding only the device nodes a Pi's programs need (null, zero,
random, a pts instance, the loop devices). There is no console; the gettys that would
sit on one are masked at run time.

Nor can this kernel mount NFS, which the disk agent does for each disk's export. The
simulator stands in for the Pi kernel's NFS client there: the disk agent's mount command
is, for this boot only (a drop-in in the Pi's ``/run``), a script that asks the NFS
stand-in, a process in the Pi's mount and network namespaces but not its PID namespace
(nothing in the Pi can reach it). It checks with ``nfs-ls``, from the Pi's address, that
the server exports the disk's directory to this Pi, then bind-mounts that directory on
the mount point inside the root, both opened without following a link.

The Pi's processes run as root with the host's capabilities: the namespaces keep a
well-behaved root's doings (hostname, network, mounts) off the host, but this is a test
bench for Bakery's own roots, not a sandbox for hostile ones.

Powering the Pi off kills its init with SIGKILL, which ends every process of its PID
namespace at once, as cutting power does; its mounts go with its mount namespace, and
the loop devices its disk agent attached (the ones its ``/dev/bakery`` nodes name) are
detached. A root whose init cannot run here (none, or one for another CPU, like an
arm64 Pi OS) boots no userspace.

``python -m bakery.sim.userspace ROOT`` is the process that becomes the Pi's PID 1: it
lays out the mounts in the new namespaces and becomes the root's init.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import stat
import subprocess
import sys
from pathlib import Path

from ..roots import SeasoningError
from ..roots.confined import open_in_root
from ..stemcell.architecture import elf_architecture, host_architecture
from . import nfs
from .wait import wait_until

#: Where a root's systemd is (Debian and Pi OS: /lib is a link to /usr/lib).
INIT = "usr/lib/systemd/systemd"
#: What the init is told it runs in (systemd's container interface).
CONTAINER = "bakery-sim"
#: The units that would sit on a console, which a simulated Pi has not.
CONSOLE_UNITS = ("console-getty.service", "getty@tty1.service", "serial-getty@ttyS0.service")
#: Character devices in the Pi's /dev: name, major, minor.
CHARACTER_DEVICES = (
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
    ("loop-control", 10, 237),
)
LOOP_MAJOR = 7
#: The file of a disk in its directory (bakery.disks.DISK_FILE).
DISK_IMAGE = "disk.img"
#: A disk's node is /dev/bakery/<id>, its partitions' /dev/bakery/<id><N>.
DISK_ID_LENGTH = 32
#: Loop device nodes made in the Pi's /dev (the kernel adds loop devices on demand; a
#: node must exist for losetup to use one).
LOOP_NODES = 64
CGROUP_V1_SYSTEMD = Path("/sys/fs/cgroup/systemd")
CGROUP_V2 = Path("/sys/fs/cgroup")
#: Joins the cgroup named by $1, then runs the rest: the Pi's processes start in it.
_JOIN_CGROUP = 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"'
#: Inside the Pi: where the NFS stand-in takes requests, and the disk agent's drop-in.
NFS_DIR = "run/bakery-sim/nfs"
MOUNT_SCRIPT = "run/bakery-sim/mount-nfs"
_REPLY_RE = re.compile(rf"/{NFS_DIR}/reply\.[0-9]+")
_DISK_ID_RE = re.compile("[0-9a-f]{32}")
#: The longest request line the stand-in reads.
REQUEST_LIMIT = 4096
DISK_AGENT_DROP_IN = "run/systemd/system/bakery-disk-agent.service.d/50-bakery-sim.conf"
#: The disk agent's mount command on a simulated Pi: one request line (its answer FIFO,
#: the export, the mount point) to the stand-in, one answer line back.
MOUNT_NFS = f"""#!/bin/sh
# mount "<server>:<dir>" on "<mount point>" as the simulated Pi's NFS client: the kernel
# under this simulated Pi has none (see bakery.sim.userspace).
set -eu
reply=/{NFS_DIR}/reply.$$
mkfifo -m 600 "$reply"
trap 'rm -f "$reply"' EXIT
exec 3<>"$reply"
printf '%s %s %s\n' "$reply" "$1" "$2" >/{NFS_DIR}/requests
read -r answer <&3
[ "$answer" = ok ] || {{ echo "mount-nfs: $answer" >&2; exit 32; }}
"""


class UserspaceError(RuntimeError):
    """The Pi's init could not be started; the message says why."""


def runnable_init(root: Path) -> bool:
    """Whether `root` has a systemd this machine can run (an arm64 one cannot run here)."""
    try:
        with (root / INIT).open("rb") as init:
            header = init.read(64)
    except OSError:
        return False
    return elf_architecture(header) == host_architecture()


class Userspace:
    """The running init of one simulated Pi, started by `start` and ended by `power_off`."""

    def __init__(self, root: Path, netns: str, name: str, server: str, nfs_port: int) -> None:
        self.root = root
        self.netns = netns
        self.server = server  # the NFS server the root came from
        self.nfs_port = nfs_port
        #: Bakery's layout, <data>/bakes/<id>/root: the disks its Pis may mount are
        #: <data>/disks/<id>.
        self.disks_dir = root.parents[2] / "disks"
        self.cgroup = _cgroup_base() / "bakery-sim" / name
        self.process: subprocess.Popen[bytes] | None = None
        self.nfs_client: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        """Start the root's init in the Pi's namespaces, and the NFS stand-in beside it;
        returns once the init runs as PID 1. A failed start leaves nothing running."""
        self.cgroup.mkdir(parents=True)
        inner = [sys.executable, "-m", __name__, str(self.root)]
        unshare = ["unshare", "--pid", "--mount", "--uts", "--ipc", "--cgroup", "--fork"]
        command = ["ip", "netns", "exec", self.netns, *unshare, "--propagation", "private"]
        try:
            self.process = subprocess.Popen(
                ["sh", "-c", _JOIN_CGROUP, "sh", str(self.cgroup), *command, *inner],
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            pid = wait_until(self._init_runs, timeout, what=f"the init of {self.root}")
            assert pid is not None  # wait_until returns what it waited for
            self.nfs_client = self._start_nfs_client(pid)
        except BaseException:
            self.power_off()
            raise

    def _start_nfs_client(self, pid: int) -> subprocess.Popen[bytes]:
        """The NFS stand-in: in the Pi's mount and network namespaces, but not in its PID
        namespace, so that nothing in the Pi can reach it (or the host's root it has)."""
        enter = ["nsenter", "-t", str(pid), "-m", "-n", "--"]
        serve = [sys.executable, "-m", __name__, "--serve-mounts", str(self.root)]
        return subprocess.Popen(
            [*enter, *serve, str(self.disks_dir), self.server, str(self.nfs_port)],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def init_pid(self) -> int | None:
        """The host's pid of the Pi's PID 1, once it is the root's init."""
        for pid in _cgroup_pids(self.cgroup):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/exe").endswith("/systemd") and _pid_inside(pid) == 1:
                    return pid
        return None

    def _init_runs(self) -> int | None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise UserspaceError(f"the Pi's init exited at once (status {self.process.returncode})")
        return self.init_pid()

    def boot_state(self) -> str:
        """What the Pi's systemd says of its boot, and what it is still doing: for a test
        that waited in vain."""
        commands = [
            ("systemctl", "is-system-running"),
            ("systemctl", "list-jobs", "--no-pager"),
            ("systemctl", "--failed", "--no-pager"),
        ]
        return "\n".join(self.run(*command).stdout for command in commands)

    def run(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run a command inside the Pi, as a shell on it would (tests look at the Pi so)."""
        pid = self.init_pid()
        if pid is None:
            raise UserspaceError("the Pi's init is not running")
        enter = ["nsenter", "-t", str(pid), "-m", "-u", "-i", "-n", "-p", "-C", "-r", "-w"]
        return subprocess.run(
            [*enter, *args], capture_output=True, text=True, timeout=timeout, check=False
        )

    def power_off(self, timeout: float = 30.0) -> None:
        """Kill every process of the Pi at once and detach the loop devices it attached.

        What to detach is read on the host before the kill, from the Pi's nodes (never
        followed) and each loop device's backing inode: nothing the Pi runs is asked."""
        loops = self._own_loops()
        if self.nfs_client is not None:
            self.nfs_client.kill()
            self.nfs_client.wait()
        for pid in _cgroup_pids(self.cgroup):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
        wait_until(lambda: not _cgroup_pids(self.cgroup), timeout, what="the Pi's processes to end")
        for loop in loops:
            subprocess.run(["losetup", "--detach", loop], capture_output=True, check=False)
        _remove_cgroup(self.cgroup)

    def _own_loops(self) -> list[str]:
        """The loop devices the Pi's disk agent attached, anchors first: those backed by
        the disk image of a disk the Pi has a node for, and those backed by one of its
        partition nodes."""
        pid = self.init_pid()
        if pid is None:
            return []
        backing: dict[tuple[int, int], str] = {}
        nodes = Path(f"/proc/{pid}/root/dev/bakery")
        with contextlib.suppress(OSError):
            for node in nodes.iterdir():
                if len(node.name) == DISK_ID_LENGTH:
                    image = self.disks_dir / node.name / DISK_IMAGE
                    with contextlib.suppress(OSError):
                        backing[_inode(image.stat())] = "disk"
                elif node.name[DISK_ID_LENGTH:].isdigit():
                    backing[_inode(node.lstat())] = "anchor"
        found: dict[str, list[str]] = {"anchor": [], "disk": []}
        for name, inode, device in _loop_backings():
            kind = backing.get((inode, device))
            if kind:
                found[kind].append(name)
        return [*found["anchor"], *found["disk"]]


def _loop_backings() -> list[tuple[str, int, int]]:
    """Every loop device on the host with its backing file's inode and device number.
    Read as JSON: the table forms pad and escape the device column (``\\x20 0:45``)."""
    listing = subprocess.run(
        ["losetup", "--list", "--json", "--output", "NAME,BACK-INO,BACK-MAJ:MIN"],
        capture_output=True,
        text=True,
        check=False,
    )
    if listing.returncode != 0 or not listing.stdout.strip():
        return []  # no loop device at all: losetup prints nothing
    backings = []
    for loop in json.loads(listing.stdout)["loopdevices"]:
        major, _, minor = str(loop.get("back-maj:min") or "").strip().partition(":")
        inode = loop.get("back-ino")
        if isinstance(inode, int) and major.isdigit() and minor.isdigit():
            backings.append((loop["name"], inode, os.makedev(int(major), int(minor))))
    return backings


def _inode(info: os.stat_result) -> tuple[int, int]:
    return info.st_ino, info.st_dev


def _cgroup_base() -> Path:
    """The hierarchy the Pis' cgroups go in: systemd's named v1 hierarchy where the host
    has one (a hybrid layout), else the unified v2 one."""
    return CGROUP_V1_SYSTEMD if (CGROUP_V1_SYSTEMD / "cgroup.procs").exists() else CGROUP_V2


def _pid_inside(pid: int) -> int | None:
    """The pid `pid` has in its own PID namespace (the last of its NSpid line)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    return None


def _remove_cgroup(cgroup: Path) -> None:
    """Remove the Pi's cgroup and those its systemd made in it, deepest first."""
    if not cgroup.exists():
        return
    for directory in sorted(cgroup.rglob("*/"), key=lambda path: len(path.parts), reverse=True):
        with contextlib.suppress(OSError):
            directory.rmdir()
    with contextlib.suppress(OSError):
        cgroup.rmdir()


def _cgroup_pids(cgroup: Path) -> list[int]:
    pids: list[int] = []
    if not cgroup.exists():
        return pids
    for procs in cgroup.rglob("cgroup.procs"):
        with contextlib.suppress(OSError):
            pids += [int(line) for line in procs.read_text().split()]
    return pids


# -- inside the Pi's namespaces: PID 1 until it becomes the root's init ------------------------


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def _lay_out(root: Path) -> None:
    """The mounts a kernel and a container manager give an init, all inside the Pi's
    mount namespace (private: nothing propagates to the host)."""
    _mount("--bind", str(root), str(root))
    _mount("-t", "proc", "proc", str(root / "proc"))
    _mount("--bind", str(root / "proc/sys"), str(root / "proc/sys"))
    _mount("-o", "remount,bind,ro", str(root / "proc/sys"))
    _mount("-t", "sysfs", "-o", "ro,nosuid,nodev,noexec", "sysfs", str(root / "sys"))
    _mount_cgroups(root / "sys/fs/cgroup")
    for tree in ("run", "tmp"):
        _mount(
            "-t",
            "tmpfs",
            "-o",
            "mode=1777" if tree == "tmp" else "mode=755",
            "tmpfs",
            str(root / tree),
        )
    _make_dev(root / "dev")
    runtime_units = root / "run/systemd/system"
    runtime_units.mkdir(parents=True)
    for unit in CONSOLE_UNITS:
        (runtime_units / unit).symlink_to("/dev/null")  # masked for this boot only


def _mount_cgroups(target: Path) -> None:
    """The Pi's own cgroup (the namespace's root) where its systemd expects it."""
    if _cgroup_base() == CGROUP_V2:
        _mount("-t", "cgroup2", "cgroup2", str(target))
        return
    _mount("-t", "tmpfs", "-o", "mode=755", "tmpfs", str(target))
    (target / "systemd").mkdir()
    _mount("-t", "cgroup", "-o", "none,name=systemd", "cgroup", str(target / "systemd"))


def _make_dev(dev: Path) -> None:
    _mount("-t", "tmpfs", "-o", "mode=755,nosuid", "tmpfs", str(dev))
    for name, major, minor in CHARACTER_DEVICES:
        os.mknod(dev / name, 0o666 | 0o020000, os.makedev(major, minor))
    for number in range(LOOP_NODES):
        os.mknod(dev / f"loop{number}", 0o660 | 0o060000, os.makedev(LOOP_MAJOR, number))
    (dev / "pts").mkdir()
    _mount("-t", "devpts", "-o", "newinstance,ptmxmode=0666,mode=620", "devpts", str(dev / "pts"))
    (dev / "ptmx").symlink_to("pts/ptmx")
    (dev / "shm").mkdir()
    _mount("-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "tmpfs", str(dev / "shm"))
    for name, target in (
        ("fd", "/proc/self/fd"),
        ("stdin", "fd/0"),
        ("stdout", "fd/1"),
        ("stderr", "fd/2"),
    ):
        (dev / name).symlink_to(target)


def _prepare_nfs_client(root: Path) -> None:
    """The FIFO the stand-in reads, the disk agent's mount command and its drop-in, all in
    the Pi's /run: nothing of them is written into the root."""
    (root / NFS_DIR).mkdir(parents=True)
    os.mkfifo(root / NFS_DIR / "requests", 0o600)
    (root / MOUNT_SCRIPT).write_text(MOUNT_NFS)
    (root / MOUNT_SCRIPT).chmod(0o755)
    drop_in = root / DISK_AGENT_DROP_IN
    drop_in.parent.mkdir(parents=True)
    drop_in.write_text(f"[Service]\nEnvironment=BAKERY_DISK_MOUNT_CMD=/{MOUNT_SCRIPT}\n")


def serve_mounts(root: Path, disks_dir: Path, server: str, nfs_port: int) -> None:
    """Answer the Pi's mount requests until killed.

    Everything in a request is the Pi's to choose, and this process sees the host: every
    path inside the root is opened without following a link, the answer goes only to a
    FIFO named as the script names it, and only a disk's own directory may be mounted."""
    with open_in_root(root, NFS_DIR) as directory:
        fd = os.open("requests", os.O_RDWR | os.O_CLOEXEC, dir_fd=directory)
    # Opened read-write, so that the FIFO never reads as ended between two writers.
    with open(fd, "rb") as requests:
        for raw in requests:
            parts = raw.decode(errors="replace").split()
            if len(raw) > REQUEST_LIMIT or len(parts) != 3 or not _REPLY_RE.fullmatch(parts[0]):
                continue
            answer = _mount_export(root, disks_dir, parts[1], parts[2], server, nfs_port)
            _answer(root, parts[0].rsplit("/", 1)[1], answer)


def _answer(root: Path, name: str, answer: str) -> None:
    with contextlib.suppress(OSError, SeasoningError), open_in_root(root, NFS_DIR) as directory:
        info = os.stat(name, dir_fd=directory, follow_symlinks=False)
        if not stat.S_ISFIFO(info.st_mode):
            return
        flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        fd = os.open(name, flags, dir_fd=directory)
        try:
            os.write(fd, answer.encode() + b"\n")
        finally:
            os.close(fd)


def _mount_export(
    root: Path, disks_dir: Path, export: str, target: str, server: str, nfs_port: int
) -> str:
    """Bind-mount a disk's directory on `target` inside the root, if it is one and the
    Pi's server exports it to this Pi; "ok" or what went wrong."""
    named, _, directory = export.partition(":")
    disk = directory.removeprefix(f"{disks_dir}/")
    if named != server or not _DISK_ID_RE.fullmatch(disk):
        return f"{export}: not a disk of {server}"
    try:
        nfs.check_export(server, directory, nfs_port)
        with open_in_root(disks_dir, disk) as source, open_in_root(root, target) as mount_point:
            done = subprocess.run(
                # --no-canonicalize: the kernel follows the descriptors, no path is
                # looked up again between the checks and the mount
                [
                    "mount",
                    "--no-canonicalize",
                    "--bind",
                    f"/proc/self/fd/{source}",
                    f"/proc/self/fd/{mount_point}",
                ],
                pass_fds=[source, mount_point],
                capture_output=True,
                text=True,
                check=False,
            )
    except (nfs.NfsError, SeasoningError, OSError) as exc:
        return f"{export}: {exc}"
    return "ok" if done.returncode == 0 else f"{export}: {done.stderr.strip()}"


def main(root: Path) -> None:
    """Become the Pi's init: lay out its mounts and its NFS stand-in's FIFO, enter its
    root, exec its systemd."""
    _lay_out(root)
    _prepare_nfs_client(root)
    os.chroot(root)
    os.chdir("/")
    environment = {"container": CONTAINER, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    os.execve(f"/{INIT}", [f"/{INIT}", "--log-target=journal"], environment)


if __name__ == "__main__":
    if sys.argv[1] == "--serve-mounts":
        serve_mounts(Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4], int(sys.argv[5]))
    else:
        main(Path(sys.argv[1]))
