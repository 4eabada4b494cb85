"""A simulated Pi runs its bake: an amd64 Debian root (debootstrap, cached) uploaded as a
bakeform and baked; after its bootloader steps and NFS read the Pi boots the root's own
systemd in its own namespaces, which runs what the root runs at boot (Bakery's boot
report among it, posting from the Pi's address). Powering it off ends every process of
it, and nothing it did reached the host: hostname, /etc, mounts, loop devices."""

from __future__ import annotations

import hashlib
import socket
import subprocess
from pathlib import Path

import pytest

from bakery.sim.network import NETNS_TOOLS
from bakery.sim.runner import SimulatedSite
from bakery.sim.wait import wait_until
from tests.support import debian
from tests.support.sites import no_progress, one_pi_site

pytestmark = [
    pytest.mark.slow,
    pytest.mark.root,
    pytest.mark.tools(*NETNS_TOOLS, *debian.TOOLS, "unshare", "nsenter"),
]

HOST_FILES = ("/etc/hostname", "/etc/hosts", "/etc/resolv.conf", "/etc/passwd", "/etc/fstab")


def host_view() -> dict[str, object]:
    """What a Pi must never change on the host."""
    loops = subprocess.run(["losetup", "--list", "--noheadings"], capture_output=True, text=True)
    with open("/proc/self/mountinfo") as mountinfo:
        mounts = sorted(line.split()[4] for line in mountinfo)
    files = {}
    for name in HOST_FILES:
        try:
            files[name] = hashlib.sha256(Path(name).read_bytes()).hexdigest()
        except OSError:
            files[name] = None
    return {
        "hostname": socket.gethostname(),
        "files": files,
        "mounts": mounts,
        "loops": loops.stdout,
    }


@pytest.fixture(scope="module")
def debian_image(tmp_path_factory) -> Path:
    return debian.debian_image(tmp_path_factory.mktemp("debian"))


@pytest.fixture
def site(tmp_path: Path):
    with one_pi_site(tmp_path) as running:
        yield running


def test_a_pi_boots_its_roots_systemd_which_runs_the_boot_report_and_dies_with_power(
    site: SimulatedSite, debian_image: Path
):
    site.api.upload("/bakeforms/debian", debian_image, replace=False, progress=no_progress)
    before = host_view()

    bake = site.api.post("/bakes", {"bakeform": "debian", "hostname": "pi-in-a-box"})

    pi = site.pis[0]
    assert site.simulator is not None
    wait_until(lambda: site.simulator.userspace(pi.serial) is not None, 120, what="userspace")
    userspace = site.simulator.userspace(pi.serial)
    assert userspace is not None
    # PID 1 is the root's own init, in the Pi's own namespaces and its network
    assert userspace.run("cat", "/proc/1/comm").stdout.strip() == "systemd"
    addresses = userspace.run("ip", "-4", "-o", "addr", "show", "eth0").stdout
    assert f" {pi.address}/" in addresses
    # the root's boot report unit told Bakery, from the Pi's address, with the bake's secret
    try:
        wait_until(
            lambda: any(
                e["message"].startswith("userspace up")
                for e in site.api.get(f"/pis/{pi.serial}/events", limit=100)
            ),
            120,
            what="the boot report of the root's own unit",
        )
    except TimeoutError:
        print(userspace.boot_state())
        raise
    assert userspace.run("hostname").stdout.strip() == "pi-in-a-box"
    assert socket.gethostname() == before["hostname"]

    site.api.post(f"/bakes/{bake['id']}/power", {"action": "off"})

    wait_until(lambda: site.simulator.userspace(pi.serial) is None, 30, what="power off")
    assert userspace.init_pid() is None
    assert not userspace.cgroup.exists()
    assert host_view() == before
