"""A simulated Pi's userspace: the root Bakery exported to it, booted by its own init.

Once a simulated Pi's bootloader has read its root over NFS from the Pi's address, its
"kernel" starts the root's init (systemd), which runs what the root runs at boot: the
disk agent, the boot report, the bosh-agent and monit of a stemcell. This machine's
kernel stands in for the Pi's, so the init gets what a kernel gives a container: its
own PID, mount, UTS, IPC and cgroup namespaces inside the Pi's network namespace, the
bake's root directory as ``/`` (the directory the NFS export serves: this kernel has no
NFS client), ``/proc`` with ``/proc/sys`` read-only and a read-only ``/sys`` (no sysctl,
uevent or udev rule reaches the host), and tmpfs ``/run``, ``/tmp`` and ``/dev`` holding
only the device nodes a Pi's programs need (null, zero, random, a pts instance, the loop
devices). There is no console; the gettys that would sit on one are masked at run time.

Nor can this kernel mount NFS, which the disk agent does for each disk's export. The
simulator stands in for the Pi kernel's NFS client there: the disk agent's mount command
is, for this boot only (a drop-in in the Pi's ``/run``), a script that asks a process
the Pi's PID 1 left outside the root; it checks with ``nfs-ls``, from the Pi's address,
that the server exports the directory to this Pi, then bind-mounts that directory on
the mount point inside the root (opened without following a link out of it).

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
printf '%s %s %s\n' "$reply" "$1" "$2" >/{NFS_DIR}/requests
read -r answer <"$reply"
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
        self.cgroup = _cgroup_base() / "bakery-sim" / name
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        """Start the root's init in the Pi's namespaces; returns once it runs as PID 1."""
        self.cgroup.mkdir(parents=True, exist_ok=True)
        inner = [sys.executable, "-m", __name__, str(self.root), self.server, str(self.nfs_port)]
        unshare = ["unshare", "--pid", "--mount", "--uts", "--ipc", "--cgroup", "--fork"]
        command = ["ip", "netns", "exec", self.netns, *unshare, "--propagation", "private"]
        self.process = subprocess.Popen(
            ["sh", "-c", _JOIN_CGROUP, "sh", str(self.cgroup), *command, *inner],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_until(self._init_runs, timeout, what=f"the init of {self.root}")

    def init_pid(self) -> int | None:
        """The host's pid of the Pi's PID 1, once it is the root's init."""
        for pid in _cgroup_pids(self.cgroup):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/exe").endswith("/systemd") and _pid_inside(pid) == 1:
                    return pid
        return None

    def _init_runs(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise UserspaceError(f"the Pi's init exited at once (status {self.process.returncode})")
        return self.init_pid() is not None

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
        """Kill every process of the Pi at once and detach the loop devices it attached."""
        loops = self._own_loops()
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
        """The loop devices the Pi's disk agent attached, anchors first: the disks' are
        those its /dev/bakery nodes are; the anchors, those on its partition nodes."""
        pid = self.init_pid()
        if pid is None:
            return []
        disks: dict[str, str] = {}
        with contextlib.suppress(OSError):
            for node in Path(f"/proc/{pid}/root/dev/bakery").iterdir():
                rdev = node.stat().st_rdev
                if os.major(rdev) == LOOP_MAJOR:
                    disks[node.name] = f"/dev/loop{os.minor(rdev)}"
        listing = self.run("losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE")
        anchors = []
        for line in listing.stdout.splitlines():
            name, _, backing = line.partition(" ")
            partition = backing.strip().removeprefix("/dev/bakery/")
            if partition[:DISK_ID_LENGTH] in disks and partition[DISK_ID_LENGTH:].isdigit():
                anchors.append(name)
        return [*anchors, *sorted(set(disks.values()))]


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


def _start_nfs_client(root: Path, server: str, nfs_port: int) -> None:
    """Leave a process outside the root that mounts the exports the Pi asks for (the
    Pi's PID 1 reaps it; it dies with the Pi's PID namespace)."""
    (root / NFS_DIR).mkdir(parents=True)
    os.mkfifo(root / NFS_DIR / "requests", 0o600)
    (root / MOUNT_SCRIPT).write_text(MOUNT_NFS)
    (root / MOUNT_SCRIPT).chmod(0o755)
    drop_in = root / DISK_AGENT_DROP_IN
    drop_in.parent.mkdir(parents=True)
    drop_in.write_text(f"[Service]\nEnvironment=BAKERY_DISK_MOUNT_CMD=/{MOUNT_SCRIPT}\n")
    if os.fork() == 0:
        try:
            _serve_mounts(root, server, nfs_port)
        finally:
            os._exit(0)


def _serve_mounts(root: Path, server: str, nfs_port: int) -> None:
    """Answer the Pi's mount requests. Everything in them is the Pi's to choose, and
    this process sees the host: the answer goes only to a FIFO named as the script names
    it, opened without following links; the export must be the Pi's server's."""
    # Opened read-write, so that the FIFO never reads as ended between two writers.
    with open(os.open(root / NFS_DIR / "requests", os.O_RDWR)) as requests:
        for line in requests:
            parts = line.split()
            if len(parts) != 3 or not _REPLY_RE.fullmatch(parts[0]):
                continue
            answer = _mount_export(root, parts[1], parts[2], server, nfs_port)
            _answer(root, parts[0].rsplit("/", 1)[1], answer)


def _answer(root: Path, name: str, answer: str) -> None:
    with contextlib.suppress(OSError, SeasoningError), open_in_root(root, NFS_DIR) as directory:
        flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        fd = os.open(name, flags, dir_fd=directory)
        try:
            if stat.S_ISFIFO(os.fstat(fd).st_mode):
                os.write(fd, answer.encode() + b"\n")
        finally:
            os.close(fd)


def _mount_export(root: Path, export: str, target: str, server: str, nfs_port: int) -> str:
    """Bind-mount the exported directory on `target` inside the root, if the Pi's server
    exports it to this Pi; "ok" or what went wrong."""
    named, _, directory = export.partition(":")
    if named != server:
        return f"{export}: only {server}'s exports are on this machine"
    try:
        nfs.check_export(server, directory, nfs_port)
        with open_in_root(root, target) as fd:
            done = subprocess.run(
                ["mount", "--bind", directory, f"/proc/self/fd/{fd}"],
                pass_fds=[fd],
                capture_output=True,
                text=True,
                check=False,
            )
    except (nfs.NfsError, SeasoningError, OSError) as exc:
        return f"{export}: {exc}"
    return "ok" if done.returncode == 0 else f"{export}: {done.stderr.strip()}"


def main(root: Path, server: str, nfs_port: int) -> None:
    """Become the Pi's init: lay out its mounts, start its NFS stand-in, enter its root,
    exec its systemd."""
    _lay_out(root)
    _start_nfs_client(root, server, nfs_port)
    os.chroot(root)
    os.chdir("/")
    environment = {"container": CONTAINER, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    os.execve(f"/{INIT}", [f"/{INIT}", "--log-target=journal"], environment)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]))
