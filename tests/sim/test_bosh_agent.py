"""The real bosh-agent, from a stemcell ``bakery stemcell build`` made (amd64 Debian root,
the real amd64 agent, monit 5.2.5 compiled), runs in a simulated Pi baked from it: the
Pi's systemd starts it with the root's own agent.json and the settings Bakery wrote, and
it answers the mbus over https with the CA checked, as ``bosh create-env`` talks to it.
Powering the Pi off ends it; the hostname it set stays the Pi's."""

from __future__ import annotations

import socket
import subprocess
import tarfile
from pathlib import Path

import pytest
import requests

from bakery.sim.image import build_sd_image
from bakery.sim.network import NETNS_TOOLS
from bakery.sim.runner import SimulatedSite, SiteOptions
from bakery.sim.wait import wait_until
from bakery.stemcell import build_stemcell
from tests.support import bosh_tools, debian

pytestmark = [
    pytest.mark.slow,
    pytest.mark.root,
    pytest.mark.tools(*NETNS_TOOLS, *debian.TOOLS, "openssl", "debugfs", "pigz", "gcc"),
    bosh_tools.needs("agent_amd64", "monit_source"),
]

AGENT_ID = "agent-7a1c"
MBUS_PASSWORD = "mbus-secret-1"


def ignore(_sent: int) -> None:
    """Upload progress, which the test does not show."""


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
    root = debian.debian_root(work / "root")
    image = build_sd_image(work / "debian.img", root_dir=root, root_mib=768)
    assert bosh_tools.AGENT_AMD64 and bosh_tools.MONIT_SOURCE
    build_stemcell(
        image,
        bosh_tools.AGENT_AMD64,
        work / "stemcell.tgz",
        monit_source=bosh_tools.MONIT_SOURCE,
        name="bosh-bakery-debian",
        version="1",
    )
    with tarfile.open(work / "stemcell.tgz") as tar:
        tar.extract("image", work / "unpacked", filter="data")
    return work / "unpacked/image"


@pytest.fixture
def site(tmp_path: Path):
    options = SiteOptions(
        root=tmp_path / "data", workdir=tmp_path / "site", pis=1, models=["4B"], mode="netns",
        bakeform=None,
    )  # fmt: skip
    with SimulatedSite(options) as running:
        yield running


def test_the_real_agent_runs_in_the_baked_pi_and_answers_its_mbus(
    site: SimulatedSite, stemcell_image: Path, tmp_path: Path
):
    pi = site.pis[0]
    certs = certificates(tmp_path, pi.address)
    (tmp_path / "ca.pem").write_text(certs["ca"])
    settings = {
        "agent_id": AGENT_ID,
        "mbus": f"https://mbus:{MBUS_PASSWORD}@{pi.address}:6868",
        "env": {"bosh": {"mbus": {"cert": certs}}},
        "blobstore": {"provider": "local", "options": {"blobstore_path": "/var/vcap/data/blobs"}},
        "networks": {
            "default": {"type": "dynamic", "preconfigured": True, "default": ["dns", "gateway"]}
        },
        "disks": {"system": "", "persistent": {}},
        "vm": {"name": "vm-1"},
        "ntp": [],
    }  # fmt: skip
    site.api.upload("/bakeforms/stemcell", stemcell_image, replace=False, progress=ignore)
    host_name = socket.gethostname()

    bake = site.api.post("/bakes", {"bakeform": "stemcell", "agent_settings": settings})

    assert site.simulator is not None
    wait_until(lambda: site.simulator.userspace(pi.serial) is not None, 120, what="userspace")
    userspace = site.simulator.userspace(pi.serial)
    assert userspace is not None

    def ping() -> dict | None:
        try:
            answer = requests.post(
                f"https://{pi.address}:6868/agent",
                json={"method": "ping", "arguments": [], "reply_to": "test"},
                auth=("mbus", MBUS_PASSWORD),
                verify=str(tmp_path / "ca.pem"),
                timeout=5,
            )
        except requests.ConnectionError:
            return None
        return answer.json()

    try:
        wait_until(lambda: ping() is not None, 90, what="the agent's mbus")
    except TimeoutError:
        print(userspace.run("journalctl", "--no-pager", "-n", "80").stdout)
        raise
    assert ping() == {"value": "pong"}
    state = requests.post(
        f"https://{pi.address}:6868/agent",
        json={"method": "get_state", "arguments": [], "reply_to": "test"},
        auth=("mbus", MBUS_PASSWORD),
        verify=str(tmp_path / "ca.pem"),
        timeout=10,
    ).json()
    assert state["value"]["agent_id"] == AGENT_ID
    wrong = requests.post(
        f"https://{pi.address}:6868/agent",
        json={"method": "ping", "arguments": [], "reply_to": "test"},
        auth=("mbus", "not-the-password"),
        verify=str(tmp_path / "ca.pem"),
        timeout=10,
    )
    assert wrong.status_code == 401
    # the agent named its VM after its id: on the Pi, never on the host
    assert userspace.run("hostname").stdout.strip() == AGENT_ID
    assert socket.gethostname() == host_name

    site.api.post(f"/bakes/{bake['id']}/power", {"action": "off"})

    wait_until(lambda: site.simulator.userspace(pi.serial) is None, 30, what="power off")
    assert ping() is None
    assert socket.gethostname() == host_name
