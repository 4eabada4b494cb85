"""The disk agent that runs on the Pi, run here as root against real loop devices and ext4.

Only the NFS mount is swapped (through ``BAKERY_DISK_MOUNT_CMD``) for a bind mount of the
"server" directory, since this kernel has no NFS client; everything after it (losetup,
links, mounting the disk, unmounting, detaching) is what happens on a Pi.
"""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from bakery.stemcell.install import packaged_file

AGENT_TOOLS = (
    *("losetup", "mount", "umount", "mkfs.ext4", "awk", "flock"),
    *("blockdev", "resize2fs", "dumpe2fs", "readlink", "stat"),
)
DISK_A = "3f2a9c0d1e2f3a4b5c6d7e8f9a0b1ce1"
DISK_B = "0123456789abcdef0123456789abcdef"
SERVER = "10.0.0.1"

pytestmark = [
    pytest.mark.root,
    pytest.mark.tools(*AGENT_TOOLS),
]

#: Stands in for ``mount -t nfs <server>:<dir> <mnt>``: the same arguments, a bind mount.
BIND_MOUNT = '#!/bin/sh\nexec mount --bind "${1#*:}" "$2"\n'


@dataclass
class Pi:
    """The disk agent's world in a temp dir: the server's disk exports, the list Bakery
    writes, and the Pi's mount base and /dev/disk/by-id."""

    base: Path

    @property
    def exports(self) -> Path:
        return self.base / "srv"

    @property
    def disks_list(self) -> Path:
        return self.base / "root/var/lib/bakery/disks"

    @property
    def mount_base(self) -> Path:
        return self.base / "run/bakery/disks"

    @property
    def by_id(self) -> Path:
        return self.base / "dev/disk/by-id"

    def link(self, disk_id: str) -> Path:
        return self.by_id / f"bakery-{disk_id}"

    def make_disk(self, disk_id: str) -> Path:
        """A 16 MiB sparse ext4 disk.img in its own export dir, like Bakery's disks."""
        image = self.exports / disk_id / "disk.img"
        image.parent.mkdir(parents=True)
        with image.open("wb") as sparse:
            sparse.truncate(16 * 1024 * 1024)
        run(["mkfs.ext4", "-q", "-F", "-L", disk_id[:16], str(image)])
        return image

    def list_disks(self, *lines: str) -> None:
        self.disks_list.parent.mkdir(parents=True, exist_ok=True)
        self.disks_list.write_text("".join(f"{line}\n" for line in lines))

    def line(self, disk_id: str, mount_point: Path | None = None) -> str:
        line = f"{disk_id} {SERVER}:{self.exports / disk_id}"
        return f"{line} ext4 {mount_point}" if mount_point else line

    def mount_point(self, path: str) -> Path:
        """A mount point in the Pi's root (absolute on the host, as the agent sees it)."""
        return self.base / "root" / path

    def run_agent(self) -> subprocess.CompletedProcess:
        env = {
            "PATH": os.environ["PATH"],
            "BAKERY_DISKS_LIST": str(self.disks_list),
            "BAKERY_DISK_MOUNT_BASE": str(self.mount_base),
            "BAKERY_DISK_BY_ID_DIR": str(self.by_id),
            "BAKERY_DISK_LOCK_FILE": str(self.base / "run/bakery-disk-agent.lock"),
            "BAKERY_DISK_MOUNT_CMD": str(self.base / "bind-mount"),
            "BAKERY_DISK_STATE_DIR": str(self.base / "run/bakery/mounted"),
        }
        return subprocess.run(
            ["sh", str(self.base / "bakery-disk-agent")], env=env, capture_output=True, text=True
        )

    def state(self) -> tuple[list[str], list[str], dict[str, str]]:
        """What the agent leaves on the machine: loop devices on our disks, mounts below
        the temp dir, and the by-id links with their targets."""
        all_loops = run(["losetup", "--list", "--noheadings"]).splitlines()
        loops = [line for line in all_loops if str(self.base) in line]
        links = {}
        if self.by_id.exists():
            links = {path.name: os.readlink(path) for path in self.by_id.iterdir()}
        return loops, mounts_below(self.base), links


def run(args: list[str]) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def mounts_below(base: Path) -> list[str]:
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts]
    return [point for point in points if point.startswith(f"{base}/")]


def backing_file(loop: str) -> str:
    return run(["losetup", "--list", "--noheadings", "--output", "BACK-FILE", loop]).strip()


@pytest.fixture
def pi(tmp_path: Path):
    """The agent's world; whatever a test leaves mounted or attached is undone, even if the
    agent under test is broken."""
    world = Pi(tmp_path)
    (tmp_path / "bakery-disk-agent").write_bytes(packaged_file("bakery-disk-agent"))
    (tmp_path / "bind-mount").write_text(BIND_MOUNT)
    (tmp_path / "bind-mount").chmod(0o755)
    try:
        yield world
    finally:
        for point in reversed(mounts_below(tmp_path)):
            subprocess.run(["umount", "--lazy", point], check=False)
        for image in tmp_path.glob("srv/*/disk.img"):
            loops = run(["losetup", "--noheadings", "--output", "NAME", "-l", "-j", str(image)])
            for loop in loops.split():
                subprocess.run(["losetup", "--detach", loop], check=False)


def test_attach_links_a_loop_device_backed_by_the_disk_image(pi: Pi):
    pi.make_disk(DISK_A)
    pi.list_disks(pi.line(DISK_A))

    result = pi.run_agent()

    assert result.returncode == 0, result.stderr
    loop = os.readlink(pi.link(DISK_A))
    assert loop.startswith("/dev/loop")
    assert backing_file(loop) == str(pi.mount_base / DISK_A / "disk.img")
    assert str(pi.mount_base / DISK_A) in mounts_below(pi.base)


def test_the_linked_device_mounts_and_keeps_what_is_written(pi: Pi, tmp_path: Path):
    image = pi.make_disk(DISK_A)
    pi.list_disks(pi.line(DISK_A))
    assert pi.run_agent().returncode == 0
    data = tmp_path / "data"
    data.mkdir()

    run(["mount", str(pi.link(DISK_A)), str(data)])
    (data / "hello").write_text("written through the loop device\n")
    run(["umount", str(data)])

    listing = run(["debugfs", "-R", "cat /hello", str(image)])
    assert listing == "written through the loop device\n"


def test_detach_removes_link_loop_and_mount(pi: Pi):
    pi.make_disk(DISK_A)
    pi.list_disks(pi.line(DISK_A))
    assert pi.run_agent().returncode == 0

    pi.list_disks()
    result = pi.run_agent()

    assert result.returncode == 0, result.stderr
    assert pi.state() == ([], [], {})
    assert not (pi.mount_base / DISK_A).exists()


def test_a_second_run_changes_nothing(pi: Pi):
    pi.make_disk(DISK_A)
    pi.make_disk(DISK_B)
    pi.list_disks(pi.line(DISK_A), pi.line(DISK_B))
    assert pi.run_agent().returncode == 0
    before = pi.state()

    again = pi.run_agent()

    assert again.returncode == 0, again.stderr
    assert pi.state() == before
    assert again.stderr == ""
    assert len(before[0]) == 2 and len(before[2]) == 2


def test_only_the_disk_gone_from_the_list_is_detached(pi: Pi):
    pi.make_disk(DISK_A)
    pi.make_disk(DISK_B)
    pi.list_disks(pi.line(DISK_A), pi.line(DISK_B))
    assert pi.run_agent().returncode == 0
    kept_loop = os.readlink(pi.link(DISK_B))

    pi.list_disks(pi.line(DISK_B))
    assert pi.run_agent().returncode == 0

    loops, mounts, links = pi.state()
    assert links == {f"bakery-{DISK_B}": kept_loop}
    assert mounts == [str(pi.mount_base / DISK_B)]
    assert len(loops) == 1 and kept_loop in loops[0]


@pytest.mark.parametrize(
    "corrupt",
    [
        "not-a-disk-id 10.0.0.1:/srv/disks/x",
        f"{DISK_A.upper()} 10.0.0.1:/srv/disks/x",
        f"{DISK_A} /no/server/part",
        f"{DISK_A} 10.0.0.1:relative/dir",
        f"{DISK_A} 10.0.0.1:/srv/../etc",
        f"{DISK_A} 10.0.0.1:/srv/$(reboot)",
        f"{DISK_A} 10.0.0.1:/srv/disks/x trailing-field",
        f"{DISK_A} 10.0.0.1:/srv/disks/x ext4",
        f"{DISK_A} 10.0.0.1:/srv/disks/x xfs /var/lib/containerd",
        f"{DISK_A} 10.0.0.1:/srv/disks/x ext4 var/lib/containerd",
        f"{DISK_A} 10.0.0.1:/srv/disks/x ext4 /var/../etc",
        f"{DISK_A} 10.0.0.1:/srv/disks/x ext4 /var/lib/$(reboot)",
        f"{DISK_A} 10.0.0.1:/srv/disks/x ext4 /var/lib/containerd extra",
    ],
)
def test_a_corrupt_line_is_logged_and_skipped_while_the_others_are_attached(pi: Pi, corrupt):
    pi.make_disk(DISK_B)
    pi.list_disks(corrupt, pi.line(DISK_B))

    result = pi.run_agent()

    assert "line 1 is not" in result.stderr
    assert result.returncode == 1
    _loops, _mounts, links = pi.state()
    assert list(links) == [f"bakery-{DISK_B}"]


def test_blank_lines_and_comments_are_not_errors(pi: Pi):
    pi.make_disk(DISK_A)
    pi.list_disks("# attached disks", "", pi.line(DISK_A))

    result = pi.run_agent()

    assert result.returncode == 0, result.stderr
    assert pi.link(DISK_A).is_symlink()


def test_a_disk_still_mounted_is_not_detached_until_unmounted(pi: Pi, tmp_path: Path):
    pi.make_disk(DISK_A)
    pi.list_disks(pi.line(DISK_A))
    assert pi.run_agent().returncode == 0
    data = tmp_path / "data"
    data.mkdir()
    run(["mount", str(pi.link(DISK_A)), str(data)])

    pi.list_disks()
    refused = pi.run_agent()
    still_there = pi.link(DISK_A).is_symlink()
    run(["umount", str(data)])
    finished = pi.run_agent()

    assert refused.returncode == 1 and "still in use" in refused.stderr
    assert still_there
    assert finished.returncode == 0, finished.stderr
    assert pi.state() == ([], [], {})


def test_a_missing_list_detaches_everything(pi: Pi):
    pi.make_disk(DISK_A)
    pi.list_disks(pi.line(DISK_A))
    assert pi.run_agent().returncode == 0

    pi.disks_list.unlink()

    assert pi.run_agent().returncode == 0
    assert pi.state() == ([], [], {})


def test_overlapping_runs_attach_each_disk_once(pi: Pi):
    pi.make_disk(DISK_A)
    pi.make_disk(DISK_B)
    pi.list_disks(pi.line(DISK_A), pi.line(DISK_B))

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: pi.run_agent(), range(4)))

    assert [r.returncode for r in results] == [0, 0, 0, 0]
    loops, mounts, links = pi.state()
    assert len(loops) == 2 and len(mounts) == 2 and len(links) == 2


def device_on(point: Path) -> str | None:
    """The device mounted on ``point`` (the top mount), as /proc/mounts says."""
    with open("/proc/self/mounts") as mounts:
        devices = [line.split()[0] for line in mounts if line.split()[1] == str(point)]
    return devices[-1] if devices else None


def test_a_disk_with_a_mount_point_is_mounted_there_on_its_loop_device(pi: Pi):
    image = pi.make_disk(DISK_A)
    containerd = pi.mount_point("var/lib/containerd")
    pi.list_disks(pi.line(DISK_A, containerd))

    result = pi.run_agent()
    (containerd / "written-on-the-pi").write_text("kept on the disk\n")

    assert result.returncode == 0, result.stderr
    loop = os.readlink(pi.link(DISK_A))
    assert device_on(containerd) == loop
    assert backing_file(loop) == str(pi.mount_base / DISK_A / "disk.img")
    pi.list_disks()
    assert pi.run_agent().returncode == 0
    assert device_on(containerd) is None
    assert pi.state() == ([], [], {})
    assert run(["debugfs", "-R", "cat /written-on-the-pi", str(image)]) == "kept on the disk\n"


def test_a_mounted_disk_is_mounted_once_and_a_second_run_is_quiet(pi: Pi):
    pi.make_disk(DISK_A)
    pi.list_disks(pi.line(DISK_A, pi.mount_point("var/lib/rancher")))
    assert pi.run_agent().returncode == 0
    before = pi.state()

    again = pi.run_agent()

    assert (again.returncode, again.stderr) == (0, "")
    assert pi.state() == before
    assert mounts_below(pi.base).count(str(pi.mount_point("var/lib/rancher"))) == 1


def test_disks_mounted_inside_one_another_mount_in_list_order(pi: Pi):
    pi.make_disk(DISK_A)
    pi.make_disk(DISK_B)
    rancher = pi.mount_point("var/lib/rancher")
    pi.list_disks(pi.line(DISK_A, rancher), pi.line(DISK_B, rancher / "k3s"))

    result = pi.run_agent()

    assert result.returncode == 0, result.stderr
    assert device_on(rancher) == os.readlink(pi.link(DISK_A))
    assert device_on(rancher / "k3s") == os.readlink(pi.link(DISK_B))


def test_a_busy_mounted_disk_stays_until_its_last_user_leaves(pi: Pi):
    pi.make_disk(DISK_A)
    containerd = pi.mount_point("var/lib/containerd")
    pi.list_disks(pi.line(DISK_A, containerd))
    assert pi.run_agent().returncode == 0
    user = subprocess.Popen(["sleep", "600"], cwd=containerd)
    try:
        pi.list_disks()
        refused = pi.run_agent()
        still_mounted = device_on(containerd)
    finally:
        user.kill()
        user.wait()
    finished = pi.run_agent()

    assert refused.returncode == 1 and "cannot unmount" in refused.stderr
    assert still_mounted is not None and still_mounted.startswith("/dev/loop")
    assert finished.returncode == 0, finished.stderr
    assert pi.state() == ([], [], {})


def test_a_new_mount_point_moves_the_mounted_disk(pi: Pi):
    pi.make_disk(DISK_A)
    old, new = pi.mount_point("var/lib/docker"), pi.mount_point("var/lib/containerd")
    pi.list_disks(pi.line(DISK_A, old))
    assert pi.run_agent().returncode == 0

    pi.list_disks(pi.line(DISK_A, new))
    result = pi.run_agent()

    assert result.returncode == 0, result.stderr
    assert device_on(old) is None
    assert device_on(new) == os.readlink(pi.link(DISK_A))


def test_another_filesystem_on_the_mount_point_is_left_alone(pi: Pi):
    pi.make_disk(DISK_A)
    containerd = pi.mount_point("var/lib/containerd")
    containerd.mkdir(parents=True)
    run(["mount", "-t", "tmpfs", "users-own", str(containerd)])
    pi.list_disks(pi.line(DISK_A, containerd))

    result = pi.run_agent()

    assert result.returncode == 1
    assert "has another filesystem mounted on it" in result.stderr
    assert device_on(containerd) == "users-own"
    assert pi.link(DISK_A).is_symlink(), "the disk is still attached as a device"


def filesystem_bytes(device: str) -> int:
    """What the ext4 filesystem on ``device`` spans, as its superblock says."""
    lines = run(["dumpe2fs", "-h", device]).splitlines()
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    return int(fields["Block count"]) * int(fields["Block size"])


def grow(image: Path, mib: int) -> None:
    """What Bakery's resize does on the server: the file grows, nothing else."""
    with image.open("r+b") as disk:
        disk.truncate(mib << 20)


def may_resize_online() -> bool:
    """ext4's online resize needs CAP_SYS_RESOURCE, which a Pi's root has and some
    containers (this test machine's, for one) do not."""
    with open("/proc/self/status") as status:
        effective = next(line for line in status if line.startswith("CapEff:")).split()[1]
    return bool(int(effective, 16) & (1 << 24))


def test_a_mounted_disk_grown_on_the_server_grows_and_keeps_its_files(pi: Pi):
    image = pi.make_disk(DISK_A)
    rancher = pi.mount_point("var/lib/rancher")
    pi.list_disks(pi.line(DISK_A, rancher))
    assert pi.run_agent().returncode == 0
    (rancher / "kept").write_text("state\n")
    loop = os.readlink(pi.link(DISK_A))
    assert filesystem_bytes(loop) == 16 << 20

    grow(image, 64)
    result = pi.run_agent()

    assert f"{loop} grown to the resized disk.img" in result.stderr
    assert run(["blockdev", "--getsize64", loop]).strip() == str(64 << 20)
    if may_resize_online():
        assert result.returncode == 0, result.stderr
        assert filesystem_bytes(loop) == 64 << 20, "grown online"
    else:
        assert "it grows when next mounted" in result.stderr
        pi.list_disks()
        assert pi.run_agent().returncode == 0
        pi.list_disks(pi.line(DISK_A, rancher))
        assert pi.run_agent().returncode == 0
        loop = os.readlink(pi.link(DISK_A))
        assert filesystem_bytes(loop) == 64 << 20, "grown at the next mount"
    assert device_on(rancher) == loop and (rancher / "kept").read_text() == "state\n"
    again = pi.run_agent()
    assert (again.returncode, again.stderr) == (0, "")


def test_a_disk_grown_while_detached_fills_its_device_when_next_mounted(pi: Pi):
    image = pi.make_disk(DISK_A)
    grow(image, 48)
    pi.list_disks(pi.line(DISK_A, pi.mount_point("var/lib/containerd")))

    result = pi.run_agent()

    assert result.returncode == 0, result.stderr
    assert filesystem_bytes(os.readlink(pi.link(DISK_A))) == 48 << 20
    assert "filesystem grown to the disk's" in result.stderr


def test_a_mount_point_through_a_symlink_is_mounted_once_where_it_leads(pi: Pi):
    pi.make_disk(DISK_A)
    real = pi.mount_point("data/containerd")
    real.mkdir(parents=True)
    link = pi.mount_point("var/lib/containerd")
    link.parent.mkdir(parents=True)
    link.symlink_to(real)
    pi.list_disks(pi.line(DISK_A, link))

    first, second = pi.run_agent(), pi.run_agent()

    assert first.returncode == 0, first.stderr
    assert (second.returncode, second.stderr) == (0, "")
    assert mounts_below(pi.base).count(str(real)) == 1
    pi.list_disks()
    assert pi.run_agent().returncode == 0
    assert pi.state() == ([], [], {})


def test_a_mount_point_that_leads_into_a_system_tree_is_refused(pi: Pi):
    pi.make_disk(DISK_A)
    link = pi.mount_point("var/run")
    link.parent.mkdir(parents=True)
    link.symlink_to("/run")
    pi.list_disks(pi.line(DISK_A, link / "containerd"))

    result = pi.run_agent()

    assert result.returncode == 1
    assert "a system directory; not mounted" in result.stderr
    assert not [point for point in mounts_below(Path("/run")) if "containerd" in point]
    assert pi.link(DISK_A).is_symlink(), "still attached as a device"


def test_disks_mounted_inside_one_another_are_undone_in_one_run(pi: Pi):
    pi.make_disk(DISK_A)
    pi.make_disk(DISK_B)
    rancher = pi.mount_point("var/lib/rancher")
    # the inner disk has the higher id: in id order the outer one would come first, busy
    outer, inner = sorted((DISK_A, DISK_B))
    pi.list_disks(pi.line(outer, rancher), pi.line(inner, rancher / "k3s"))
    assert pi.run_agent().returncode == 0

    pi.list_disks()
    result = pi.run_agent()

    assert result.returncode == 0, result.stderr
    assert pi.state() == ([], [], {})
