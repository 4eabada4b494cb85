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
import signal
import subprocess
import sys
from pathlib import Path

from ..stemcell.architecture import elf_architecture, host_architecture
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
#: Loop device nodes made in the Pi's /dev (the kernel adds loop devices on demand; a
#: node must exist for losetup to use one).
LOOP_NODES = 64
CGROUP_V1_SYSTEMD = Path("/sys/fs/cgroup/systemd")
CGROUP_V2 = Path("/sys/fs/cgroup")
#: Joins the cgroup named by $1, then runs the rest: the Pi's processes start in it.
_JOIN_CGROUP = 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"'


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

    def __init__(self, root: Path, netns: str, name: str) -> None:
        self.root = root
        self.netns = netns
        self.cgroup = _cgroup_base() / "bakery-sim" / name
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        """Start the root's init in the Pi's namespaces; returns once it runs as PID 1."""
        self.cgroup.mkdir(parents=True, exist_ok=True)
        inner = [sys.executable, "-m", __name__, str(self.root)]
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
        """The loop devices the Pi's disk agent attached: those its /dev/bakery nodes are."""
        pid = self.init_pid()
        if pid is None:
            return []
        nodes = Path(f"/proc/{pid}/root/dev/bakery")
        loops = set()
        with contextlib.suppress(OSError):
            for node in nodes.iterdir():
                rdev = node.stat().st_rdev
                if os.major(rdev) == LOOP_MAJOR:
                    loops.add(f"/dev/loop{os.minor(rdev)}")
        return sorted(loops)


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


def main(root: Path) -> None:
    """Become the Pi's init: lay out its mounts, enter its root, exec its systemd."""
    _lay_out(root)
    os.chroot(root)
    os.chdir("/")
    environment = {"container": CONTAINER, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    os.execve(f"/{INIT}", [f"/{INIT}", "--log-target=journal"], environment)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
