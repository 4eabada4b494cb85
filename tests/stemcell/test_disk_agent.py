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

from bakery.disks import partition_disk_image
from bakery.stemcell.install import packaged_file

AGENT_TOOLS = (
    *("losetup", "mount", "umount", "mkfs.ext4", "awk", "flock"),
    *("blockdev", "resize2fs", "dumpe2fs", "readlink", "stat", "partx", "mknod", "sfdisk"),
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

    @property
    def node_dir(self) -> Path:
        return self.base / "dev/bakery"

    def link(self, disk_id: str) -> Path:
        return self.by_id / f"bakery-{disk_id}"

    def loop(self, disk_id: str) -> str:
        """The loop device the disk's link leads to, by the numbers of its node."""
        return loop_of(os.stat(self.link(disk_id)).st_rdev)

    def make_disk(self, disk_id: str) -> Path:
        """A 16 MiB sparse ext4 disk.img in its own export dir, like Bakery's disks."""
        image = self.exports / disk_id / "disk.img"
        image.parent.mkdir(parents=True)
        with image.open("wb") as sparse:
            sparse.truncate(16 * 1024 * 1024)
        run(["mkfs.ext4", "-q", "-F", "-L", disk_id[:16], str(image)])
        return image

    def make_raw_disk(self, disk_id: str, *, partitioned: bool = False) -> Path:
        """A 64 MiB sparse disk.img with nothing on it, or with the partition table
        Bakery gives a BOSH disk."""
        image = self.exports / disk_id / "disk.img"
        image.parent.mkdir(parents=True)
        with image.open("wb") as sparse:
            sparse.truncate(64 * 1024 * 1024)
        if partitioned:
            partition_disk_image(image)
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
            "BAKERY_DISK_NODE_DIR": str(self.node_dir),
            "BAKERY_DISK_LOCK_FILE": str(self.base / "run/bakery-disk-agent.lock"),
            "BAKERY_DISK_MOUNT_CMD": str(self.base / "bind-mount"),
            "BAKERY_DISK_STATE_DIR": str(self.base / "run/bakery/mounted"),
        }
        return subprocess.run(
            ["sh", str(self.base / "bakery-disk-agent")], env=env, capture_output=True, text=True
        )

    def state(self) -> tuple[list[str], list[str], dict[str, str]]:
        """What the agent leaves on the machine: loop devices on our disks, mounts below
        the temp dir, and the by-id links with their targets and the device nodes
        (``node:<name>``) with their numbers."""
        all_loops = run(["losetup", "--list", "--noheadings"]).splitlines()
        loops = [line for line in all_loops if str(self.base) in line]
        links = {}
        if self.by_id.exists():
            links = {path.name: os.readlink(path) for path in sorted(self.by_id.iterdir())}
        if self.node_dir.exists():
            for node in sorted(self.node_dir.iterdir()):
                rdev = node.stat().st_rdev
                links[f"node:{node.name}"] = f"{os.major(rdev)}:{os.minor(rdev)}"
        return loops, mounts_below(self.base), links


def run(args: list[str]) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def mounts_below(base: Path) -> list[str]:
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts]
    return [point for point in points if point.startswith(f"{base}/")]


def loop_of(rdev: int) -> str:
    """The name the kernel gives the block device numbered `rdev` (``/dev/loop3``)."""
    return "/dev/" + os.path.basename(
        os.readlink(f"/sys/dev/block/{os.major(rdev)}:{os.minor(rdev)}")
    )


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
        for anchor in world.node_dir.glob("*") if world.node_dir.exists() else []:
            loops = run(["losetup", "--noheadings", "--output", "NAME", "-l", "-j", str(anchor)])
            for loop in loops.split():
                subprocess.run(["losetup", "--detach", loop], check=False)
        for image in tmp_path.glob("srv/*/disk.img"):
            loops = run(["losetup", "--noheadings", "--output", "NAME", "-l", "-j", str(image)])
            for loop in loops.split():
                subprocess.run(["losetup", "--detach", loop], check=False)


def test_attach_links_a_loop_device_backed_by_the_disk_image(pi: Pi):
    pi.make_disk(DISK_A)
    pi.list_disks(pi.line(DISK_A))

    result = pi.run_agent()

    assert result.returncode == 0, result.stderr
    assert os.readlink(pi.link(DISK_A)) == str(pi.node_dir / DISK_A)
    loop = pi.loop(DISK_A)
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


def test_a_disk_deleted_right_after_its_detach_still_has_its_loops_detached(pi: Pi):
    """As BOSH does it: detach_disk, then delete_disk at once, before the agent's next run;
    the partitioned disk's loop reads a deleted file by then."""
    image = pi.make_raw_disk(DISK_A, partitioned=True)
    pi.list_disks(pi.line(DISK_A))
    assert pi.run_agent().returncode == 0
    loop = pi.loop(DISK_A)

    pi.list_disks()
    image.unlink()
    result = pi.run_agent()

    assert result.returncode == 0, result.stderr
    assert backing_file(loop) == ""  # found by its node, not by a path now gone
    assert pi.state() == ([], [], {})


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
    assert len(before[0]) == 2 and len(before[2]) == 4  # two links, two nodes


def test_only_the_disk_gone_from_the_list_is_detached(pi: Pi):
    pi.make_disk(DISK_A)
    pi.make_disk(DISK_B)
    pi.list_disks(pi.line(DISK_A), pi.line(DISK_B))
    assert pi.run_agent().returncode == 0
    kept_loop = pi.loop(DISK_B)
    kept_node = pi.state()[2][f"node:{DISK_B}"]

    pi.list_disks(pi.line(DISK_B))
    assert pi.run_agent().returncode == 0

    loops, mounts, links = pi.state()
    assert links == {f"bakery-{DISK_B}": str(pi.node_dir / DISK_B), f"node:{DISK_B}": kept_node}
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
    assert list(links) == [f"bakery-{DISK_B}", f"node:{DISK_B}"]


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
    assert len(loops) == 2 and len(mounts) == 2 and len(links) == 4


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
    loop = pi.loop(DISK_A)
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
    assert device_on(rancher) == pi.loop(DISK_A)
    assert device_on(rancher / "k3s") == pi.loop(DISK_B)


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
    assert device_on(new) == pi.loop(DISK_A)


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
    loop = pi.loop(DISK_A)
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
        loop = pi.loop(DISK_A)
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
    assert filesystem_bytes(pi.loop(DISK_A)) == 48 << 20
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


def numbers(path: Path | str) -> str:
    """major:minor of the block device node `path`, as sysfs writes them."""
    rdev = os.stat(path).st_rdev
    return f"{os.major(rdev)}:{os.minor(rdev)}"


def test_a_bosh_disk_s_partition_is_named_as_the_bosh_agent_names_it(pi: Pi, tmp_path: Path):
    """The agent resolves the by-id link to the disk's node, formats and mounts
    ``<node>1`` and later finds that name in the mount table."""
    image = pi.make_raw_disk(DISK_A, partitioned=True)
    pi.list_disks(pi.line(DISK_A))

    assert pi.run_agent().returncode == 0
    disk, partition = pi.node_dir / DISK_A, pi.node_dir / f"{DISK_A}1"
    assert os.path.realpath(pi.link(DISK_A)) == str(disk)
    loop = pi.loop(DISK_A).removeprefix("/dev/")
    assert numbers(partition) == Path(f"/sys/block/{loop}/{loop}p1/dev").read_text().strip()
    # the agent writes the same table again and asks for a re-read: the anchored
    # partition stays, its node still right
    rewrite = subprocess.run(["sfdisk", str(disk)], input=",,L\n", text=True, capture_output=True)
    assert rewrite.returncode == 0 and "busy" in rewrite.stderr + rewrite.stdout
    assert numbers(partition) == Path(f"/sys/block/{loop}/{loop}p1/dev").read_text().strip()
    run(["mkfs.ext4", "-q", str(partition)])
    data = tmp_path / "store"
    data.mkdir()
    run(["mount", str(partition), str(data)])
    assert device_on(data) == str(partition)
    (data / "hello").write_text("kept on the partition\n")

    pi.list_disks()
    refused = pi.run_agent()  # mounted by its node's name, still found in use
    run(["umount", str(data)])
    finished = pi.run_agent()

    assert refused.returncode == 1 and "still in use" in refused.stderr
    assert finished.returncode == 0, finished.stderr
    assert pi.state() == ([], [], {})
    kept = run(["debugfs", "-R", "cat /hello", f"{image}?offset={1024 * 1024}"])
    assert kept == "kept on the partition\n"


def test_partitions_made_or_removed_on_the_pi_get_or_lose_their_nodes(pi: Pi):
    pi.make_raw_disk(DISK_A)
    pi.list_disks(pi.line(DISK_A))
    assert pi.run_agent().returncode == 0
    assert sorted(pi.node_dir.iterdir()) == [pi.node_dir / DISK_A]

    disk = str(pi.node_dir / DISK_A)
    table = "label: dos\nstart=2048, size=20MiB, type=83\nstart=43008, type=82\n"
    subprocess.run(["sfdisk", "--quiet", disk], input=table, text=True, check=True)
    assert pi.run_agent().returncode == 0
    names = [DISK_A, f"{DISK_A}1", f"{DISK_A}2"]
    assert sorted(pi.node_dir.iterdir()) == [pi.node_dir / name for name in names]

    subprocess.run(["sfdisk", "--quiet", "--delete", disk, "2"], check=True)
    assert pi.run_agent().returncode == 0
    assert sorted(pi.node_dir.iterdir()) == [pi.node_dir / name for name in names[:2]]
