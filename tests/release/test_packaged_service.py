"""The deployed service, run as BOSH runs it: every package compiled offline from the
pinned sources (python3 included) into a /var/vcap/packages-like directory, the bakery job
rendered into a /var/vcap/jobs-like one, its pre-start run and its bpm process started
with exactly the command and environment the rendered bpm.yml gives (no bpm here). The
packaged ``bakery`` CLI then registers a Pi, uploads a bakeform, bakes and unbakes; the
packaged nfs-ganesha, run by the service, serves the bake's root to the Pi's address in
its network namespace, read back with nfs-cat, and refuses another address; the Pi's
cmdline.txt (over the packaged service's TFTP) names the server's MOUNT port."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from bakery.sim import nfs
from bakery.sim.image import build_sd_image, fleet_boot_files
from bakery.sim.models import SimPi, make_pis
from bakery.sim.network import NETNS_TOOLS, NetnsNetwork, free_subnet
from bakery.sim.server import free_port
from bakery.sim.tftp_client import PiClient
from bakery.sim.wait import wait_until

from .bosh import (
    BARE_PATH,
    compile_package,
    load_yaml,
    needs_ruby,
    release_blobs,
    render_job,
    report_line,
)

pytestmark = [
    pytest.mark.slow,
    # compiling CPython is most of it: minutes on two cores
    pytest.mark.timeout(2400),
    needs_ruby,
    pytest.mark.root,
    pytest.mark.tools(
        "unshare", "gcc", "make", "cmake", "bison", "flex", "tclsh", "nfs-cat", *NETNS_TOOLS
    ),
]
#: In dependency order, as the director compiles them.
PACKAGES = ("python3", "bakery", "dnsmasq", "mtools", "nfs-ganesha")
#: CPython takes minutes on two cores; the others well under one.
COMPILE_TIMEOUT = 1800
TOKEN = "packaged-service-admin-token-0123456789"
VCAP = "/var/vcap/"


@pytest.fixture(scope="module")
def vcap(request, tmp_path_factory) -> Path:
    """Every package compiled offline, as the agent compiles them, into ``packages/``."""
    blobs = release_blobs(request, tmp_path_factory)
    root = tmp_path_factory.mktemp("vcap")
    for package in PACKAGES:
        started = time.monotonic()
        compile_package(package, blobs, root, timeout=COMPILE_TIMEOUT)
        took = time.monotonic() - started
        report_line(request, f"compiled package {package} offline in {took:.0f} s")
    return root


@dataclass
class Deployment:
    """The running bakery job: its address, the Pis' network and the packaged CLI."""

    vcap: Path
    url: str
    network: NetnsNetwork
    pis: list[SimPi]
    process: subprocess.Popen[bytes]

    @property
    def data_dir(self) -> Path:
        return self.vcap / "store" / "bakery"

    def bakery(self, *args: str) -> str:
        """The packaged CLI, with nothing of this machine's environment but a bare PATH."""
        done = subprocess.run(
            [str(self.vcap / "packages" / "bakery" / "bin" / "bakery"), *args],
            env={"PATH": BARE_PATH, "BAKERY_URL": self.url, "BAKERY_TOKEN": TOKEN},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def tftp_get(self, pi: SimPi, name: str) -> bytes:
        """``<serial>/<name>`` over TFTP from ``pi``'s namespace, as its bootloader asks."""
        client = PiClient((self.network.server_ip, 69), pi.serial, pi.address)
        return self.network.call(pi, client.get, name)

    def read_as(self, pi: SimPi, path: str) -> bytes:
        """``path`` over NFS from ``pi``'s namespace, so from its address (NFSv4)."""
        return self.network.call(pi, nfs.read_file, self.network.server_ip, path, 2049)


def as_on_this_machine(job_dir: Path, vcap: Path) -> None:
    """The rendered job with /var/vcap/ meaning ``vcap``: the one change to what BOSH
    would lay out, so the test needs no /var/vcap of the host's."""
    for path in job_dir.rglob("*"):
        if path.is_file():
            path.write_text(path.read_text().replace(VCAP, f"{vcap}/"))


@pytest.fixture(scope="module")
def deployment(vcap, tmp_path_factory) -> Iterator[Deployment]:
    network = NetnsNetwork(free_subnet()).open()
    try:
        pis = make_pis(2, ["4B"], network.addresses(2), 0x7AC0_0000)
        for pi in pis:
            network.attach(pi)
        yield from _deployed(vcap, network, pis, tmp_path_factory.mktemp("logs"))
    finally:
        network.close()


def _deployed(
    vcap: Path, network: NetnsNetwork, pis: list[SimPi], logs: Path
) -> Iterator[Deployment]:
    port = free_port()
    properties = {
        "bind": f"127.0.0.1:{port}",
        "nfs": {"server": network.server_ip},
        "power": {"on_gap": 0},
        "api_tokens": {"operator": {"token": TOKEN, "role": "admin"}},
    }
    job_dir = render_job("bakery", properties, vcap / "jobs")
    as_on_this_machine(job_dir, vcap)
    subprocess.run(
        ["bash", str(job_dir / "bin" / "pre-start")], check=True, env={"PATH": BARE_PATH}
    )
    (process,) = load_yaml(job_dir / "config" / "bpm.yml")["processes"]
    with open(logs / "bakery.log", "wb") as log:
        started = subprocess.Popen(
            [process["executable"], *process["args"]],
            env=process["env"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deployment = Deployment(vcap, f"http://127.0.0.1:{port}", network, pis, started)
    try:
        wait_until(lambda: _healthy(deployment), 60, what="the packaged bakery")
        yield deployment
    except BaseException:
        print((logs / "bakery.log").read_text(errors="replace")[-6000:])
        raise
    finally:
        os.killpg(started.pid, signal.SIGTERM)
        started.wait(60)


def _healthy(deployment: Deployment) -> bool:
    if deployment.process.poll() is not None:
        raise RuntimeError(f"the packaged bakery exited with {deployment.process.returncode}")
    try:
        return requests.get(f"{deployment.url}/api/v1/health", timeout=2).ok
    except requests.ConnectionError:
        return False


def test_the_packaged_service_bakes_serves_the_root_to_its_pi_only_and_unbakes(
    deployment, tmp_path
):
    pi, other = deployment.pis
    image = build_sd_image(tmp_path / "demo.img", boot=fleet_boot_files())
    deployment.bakery("pi", "register", pi.serial, "--ip", pi.address, "--mac", pi.mac)
    deployment.bakery("bakeform", "upload", "demo", str(image))

    bake = json.loads(deployment.bakery("--json", "bake", "demo", "--serial", pi.serial))

    root = f"{deployment.data_dir}/bakes/{bake['id']}/root"
    assert bake["root_export"] == f"{deployment.network.server_ip}:{root}"
    assert deployment.read_as(pi, f"{root}/etc/hostname") == f"pi-{pi.serial}\n".encode()
    with pytest.raises(nfs.NfsError):
        deployment.read_as(other, f"{root}/etc/hostname")
    # no rpcbind runs beside the packaged nfs-ganesha: the Pi's kernel is told its ports
    cmdline = deployment.tftp_get(pi, "cmdline.txt").decode()
    assert f"nfsroot={bake['root_export']},vers=3,tcp,port=2049,mountport=20048," in cmdline

    deployment.bakery("unbake", bake["id"])

    with pytest.raises(nfs.NfsError):
        deployment.read_as(pi, f"{root}/etc/hostname")
    assert not Path(root).exists()
    assert json.loads(deployment.bakery("--json", "pi", "show", pi.serial))["state"] == "available"
