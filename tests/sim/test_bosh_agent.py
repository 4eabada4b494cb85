"""The real bosh-agent, from a stemcell ``bakery stemcell build`` made (amd64 Debian root,
the real amd64 agent, monit 5.2.5 compiled), runs in a simulated Pi baked from it: the
Pi's systemd starts it with the root's own agent.json and the settings Bakery wrote, and
it answers the mbus over https with the CA checked, as ``bosh create-env`` talks to it.
Powering the Pi off ends it; the hostname it set stays the Pi's."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests

from bakery.sim.network import NETNS_TOOLS
from bakery.sim.runner import SimulatedSite
from bakery.sim.userspace import Userspace
from bakery.sim.wait import wait_until
from tests.support import bosh_tools, debian
from tests.support.sites import (
    agent_stemcell,
    host_loops,
    image_of_stemcell,
    no_progress,
    one_pi_site,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.root,
    pytest.mark.tools(*NETNS_TOOLS, *debian.TOOLS, "openssl", "debugfs", "pigz", "gcc"),
    bosh_tools.needs("agent_amd64", "monit_source"),
]

AGENT_ID = "agent-7a1c"
MBUS_PASSWORD = "mbus-secret-1"


def certificates(work: Path, address: str) -> dict[str, str]:
    """A CA and the agent's certificate for `address`, as bosh create-env generates."""
    ca_key, ca, key, request, cert = (
        work / name for name in ("ca.key", "ca.pem", "a.key", "a.csr", "a.pem")
    )
    openssl = ["openssl"]
    subprocess.run(
        [
            *openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            ca_key,
            "-out",
            ca,
            "-days",
            "2",
            "-subj",
            "/CN=test-ca",
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *openssl,
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            key,
            "-out",
            request,
            "-subj",
            f"/CN={address}",
        ],
        check=True,
        capture_output=True,
    )
    extensions = work / "san.cnf"
    extensions.write_text(f"subjectAltName=IP:{address}\n")
    subprocess.run(
        [
            *openssl,
            "x509",
            "-req",
            "-in",
            request,
            "-CA",
            ca,
            "-CAkey",
            ca_key,
            "-CAcreateserial",
            "-out",
            cert,
            "-days",
            "2",
            "-extfile",
            extensions,
        ],
        check=True,
        capture_output=True,
    )
    return {
        "ca": ca.read_text(),
        "certificate": cert.read_text(),
        "private_key": key.read_text(),
    }


@pytest.fixture(scope="module")
def stemcell_image(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("stemcell")
    return image_of_stemcell(agent_stemcell(work), work / "unpacked")


@pytest.fixture
def site(tmp_path: Path):
    with one_pi_site(tmp_path) as running:
        yield running


class Mbus:
    """``bosh create-env``'s side of the agent's https mbus."""

    def __init__(self, address: str, ca_file: Path, password: str = MBUS_PASSWORD) -> None:
        self.url = f"https://{address}:6868/agent"
        self.ca_file = ca_file
        self.password = password

    def post(self, method: str, *arguments: object) -> requests.Response:
        return requests.post(
            self.url,
            json={"method": method, "arguments": list(arguments), "reply_to": "test"},
            auth=("mbus", self.password),
            verify=str(self.ca_file),
            timeout=30,
        )

    def ping(self) -> dict | None:
        try:
            return self.post("ping").json()
        except requests.ConnectionError:
            return None

    def task(self, method: str, *arguments: object, timeout: float = 120.0) -> Any:
        """Call `method`; for a long one, wait on its task as the CLI does (get_task)."""
        answer = self.post(method, *arguments).json()

        def finished() -> bool:
            nonlocal answer
            value = answer.get("value")
            if not (isinstance(value, dict) and value.get("state") == "running"):
                return True
            answer = self.post("get_task", value["agent_task_id"]).json()
            return False

        wait_until(finished, timeout, interval=0.5, what=f"the agent's {method}")
        assert "exception" not in answer, answer
        return answer["value"]


def agent_settings(address: str, certs: dict[str, str]) -> dict:
    return {
        "agent_id": AGENT_ID,
        "mbus": f"https://mbus:{MBUS_PASSWORD}@{address}:6868",
        "env": {"bosh": {"mbus": {"cert": certs}}},
        "blobstore": {"provider": "local", "options": {"blobstore_path": "/var/vcap/data/blobs"}},
        "networks": {
            "default": {"type": "dynamic", "preconfigured": True, "default": ["dns", "gateway"]}
        },
        "disks": {"system": "", "persistent": {}},
        "vm": {"name": "vm-1"},
        "ntp": [],
    }  # fmt: skip


def boot_agent(site: SimulatedSite, stemcell_image: Path, tmp_path: Path) -> tuple[dict, Mbus]:
    """Bake the stemcell onto the site's Pi with agent settings; its bake and mbus once
    the agent answers."""
    pi = site.pis[0]
    certs = certificates(tmp_path, pi.address)
    (tmp_path / "ca.pem").write_text(certs["ca"])
    site.api.upload("/bakeforms/stemcell", stemcell_image, replace=False, progress=no_progress)
    bake = site.api.post(
        "/bakes", {"bakeform": "stemcell", "agent_settings": agent_settings(pi.address, certs)}
    )
    mbus = Mbus(pi.address, tmp_path / "ca.pem")
    wait_for_agent(site, mbus)
    return bake, mbus


def wait_for_agent(site: SimulatedSite, mbus: Mbus) -> None:
    pi = site.pis[0]
    assert site.simulator is not None
    wait_until(lambda: site.simulator.userspace(pi.serial) is not None, 120, what="userspace")
    try:
        wait_until(lambda: mbus.ping() is not None, 90, what="the agent's mbus")
    except TimeoutError:
        userspace = site.simulator.userspace(pi.serial)
        if userspace is not None:
            print(userspace.boot_state())
            print(userspace.run("systemctl", "status", "--no-pager", "-l", "bosh-agent").stdout)
        raise


def test_the_real_agent_runs_in_the_baked_pi_and_answers_its_mbus(
    site: SimulatedSite, stemcell_image: Path, tmp_path: Path
):
    pi = site.pis[0]
    host_name = socket.gethostname()

    bake, mbus = boot_agent(site, stemcell_image, tmp_path)

    assert mbus.ping() == {"value": "pong"}
    assert mbus.task("get_state")["agent_id"] == AGENT_ID
    assert Mbus(pi.address, mbus.ca_file, "not-the-password").post("ping").status_code == 401
    # the agent named its VM after its id: on the Pi, never on the host
    userspace = site.simulator.userspace(pi.serial)
    assert userspace.run("hostname").stdout.strip() == AGENT_ID
    assert socket.gethostname() == host_name

    site.api.post(f"/bakes/{bake['id']}/power", {"action": "off"})

    wait_until(lambda: site.simulator.userspace(pi.serial) is None, 30, what="power off")
    assert mbus.ping() is None
    assert socket.gethostname() == host_name


def mounted_on(userspace: Userspace, point: str) -> str:
    done = userspace.run("findmnt", "--noheadings", "--output", "SOURCE", point)
    return done.stdout.strip()


def test_the_agent_formats_mounts_and_unmounts_a_persistent_disk_keeping_its_data(
    site: SimulatedSite, stemcell_image: Path, tmp_path: Path
):
    """As create-env does it: attach (the CPI's part: Bakery lists the disk for the Pi),
    add_persistent_disk and mount_disk (the agent writes the partition table again,
    formats the partition and mounts it by the name it gives it), unmount_disk, a second
    mount_disk with the data still there, and a detach the disk agent undoes."""
    pi = site.pis[0]
    loops_before = host_loops()
    bake, mbus = boot_agent(site, stemcell_image, tmp_path)
    # 1 GiB (sparse): the agent takes a disk under 100 MB for one whose partition must grow
    disk = site.api.post("/disks", {"size_mib": 1024, "partitioned": True})["id"]
    hint = site.api.post(f"/disks/{disk}/attach", {"bake_id": bake["id"]})["device"]
    partition = f"/dev/bakery/{disk}1"
    assert site.simulator is not None
    userspace = site.simulator.userspace(pi.serial)
    assert userspace is not None

    # the disk agent (at boot, then every 5 s) has it on a loop device, with its nodes
    wait_until(lambda: userspace.run("test", "-b", partition).returncode == 0, 60, what="disk")
    mbus.task("add_persistent_disk", disk, {"id": disk, "path": hint})
    mbus.task("mount_disk", disk)

    assert mounted_on(userspace, "/var/vcap/store") == partition
    assert mbus.task("list_disk") == [disk]
    userspace.run("sh", "-c", "echo 'kept on the disk' > /var/vcap/store/data")
    mbus.task("unmount_disk", disk)
    assert mounted_on(userspace, "/var/vcap/store") == ""
    mbus.task("mount_disk", disk)  # the table written again, the filesystem kept
    assert userspace.run("cat", "/var/vcap/store/data").stdout == "kept on the disk\n"
    mbus.task("unmount_disk", disk)

    site.api.post(f"/disks/{disk}/detach")
    wait_until(lambda: userspace.run("test", "-e", partition).returncode != 0, 60, what="detach")
    site.api.delete(f"/bakes/{bake['id']}")
    wait_until(lambda: site.simulator.userspace(pi.serial) is None, 30, what="power off")
    assert host_loops() == loops_before


def test_powering_off_a_pi_with_a_mounted_disk_detaches_its_loop_devices(
    site: SimulatedSite, stemcell_image: Path, tmp_path: Path
):
    """As ``bosh delete-env`` and ``--recreate`` do it: the VM is deleted with its disk
    still attached (only unmounted by the agent, or not even that when the Pi hangs).
    The power-off detaches the disk's loop device and its partitions' anchors on the
    host; the disk itself stays, for the next VM."""
    pi = site.pis[0]
    loops_before = host_loops()
    bake, mbus = boot_agent(site, stemcell_image, tmp_path)
    disk = site.api.post("/disks", {"size_mib": 1024, "partitioned": True})["id"]
    hint = site.api.post(f"/disks/{disk}/attach", {"bake_id": bake["id"]})["device"]
    assert site.simulator is not None
    userspace = site.simulator.userspace(pi.serial)
    assert userspace is not None
    partition = f"/dev/bakery/{disk}1"
    wait_until(lambda: userspace.run("test", "-b", partition).returncode == 0, 60, what="disk")
    mbus.task("add_persistent_disk", disk, {"id": disk, "path": hint})
    mbus.task("mount_disk", disk)
    assert host_loops() != loops_before

    site.api.delete(f"/bakes/{bake['id']}")

    wait_until(lambda: site.simulator.userspace(pi.serial) is None, 30, what="power off")
    assert host_loops() == loops_before
    assert site.api.get(f"/disks/{disk}")["bake_id"] is None
