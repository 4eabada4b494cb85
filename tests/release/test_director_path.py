"""The director path, as far as it runs here: the real bosh CLI interpolates
cloudfoundry/bosh-deployment's ``bosh.yml`` with an IaaS CPI (vSphere's ops file) and our
``colocate-bakery-cpi.yml``, as an operator deploying a director beside Bakery does. The
Bakery CPI lands beside the IaaS CPI on the director, points its agents at the director's
own NATS and dav blobstore with the credentials the CLI generated, and the agent settings
it builds from the rendered cpi.json have the shape the real agent parses. The
cpi-config and cloud-config interpolate and name each other's CPIs and AZs."""

from __future__ import annotations

import subprocess
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from bakery_cpi import agent_settings
from bakery_cpi.config import load_config
from tests.support import bosh_tools

from .bosh import RELEASE, job_spec, needs_ruby, render_job

BOSH = bosh_tools.CLI
DEPLOYMENT = bosh_tools.DEPLOYMENT or Path("/nonexistent")
pytestmark = [needs_ruby, bosh_tools.needs("cli", "deployment")]

DIRECTOR_IP = "10.0.0.6"
BAKERY_IP = "10.0.0.10"  # README step 3's example
DIRECTOR_TOKEN = "bky_director-token-0123456789abcdefghij"
VSPHERE = {
    "vcenter_cluster": "cluster",
    "vcenter_dc": "dc",
    "vcenter_disks": "disks",
    "vcenter_ds": "ds",
    "vcenter_ip": "10.0.0.2",
    "vcenter_password": "secret",
    "vcenter_templates": "templates",
    "vcenter_user": "admin",
    "vcenter_vms": "vms",
}


def bosh_int(manifest: Path, *args: str) -> dict:
    done = subprocess.run(
        [BOSH, "int", str(manifest), *args], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return yaml.safe_load(done.stdout)


@pytest.fixture(scope="module")
def director(tmp_path_factory) -> tuple[dict, dict]:
    """The director's manifest with the Bakery CPI colocated, and the generated creds."""
    work = tmp_path_factory.mktemp("director")
    bakery_creds = work / "bakery-creds.yml"
    # what README step 2's vars store gives step 3's -l: the director's token and the CA
    bakery_creds.write_text(
        yaml.safe_dump(
            {
                "bakery_director_token": DIRECTOR_TOKEN,
                "bakery_tls": {"ca": "-----BEGIN CERTIFICATE-----"},
            }
        )
    )
    creds = work / "creds.yml"
    variables = {
        "director_name": "bosh",
        "internal_cidr": "10.0.0.0/24",
        "internal_gw": "10.0.0.1",
        "internal_ip": DIRECTOR_IP,
        "network_name": "VM Network",
        "bakery_release": str(work / "bakery.tgz"),
        "bakery_ip": BAKERY_IP,
        **VSPHERE,
    }
    manifest = bosh_int(
        DEPLOYMENT / "bosh.yml",
        "-o",
        str(DEPLOYMENT / "vsphere" / "cpi.yml"),
        "-o",
        str(RELEASE / "bosh-release" / "colocate-bakery-cpi.yml"),
        "--vars-store",
        str(creds),
        "-l",
        str(bakery_creds),
        *(f"-v{name}={value}" for name, value in variables.items()),
    )
    return manifest, yaml.safe_load(creds.read_text())


def bosh_jobs(manifest: dict) -> dict[str, dict]:
    (group,) = [g for g in manifest["instance_groups"] if g["name"] == "bosh"]
    return {job["name"]: job for job in group["jobs"]}


def test_the_bakery_cpi_sits_beside_the_iaas_cpi_on_the_director(director):
    manifest, _ = director
    jobs = bosh_jobs(manifest)

    assert {"director", "nats", "blobstore", "vsphere_cpi", "bakery_cpi"} <= set(jobs)
    assert jobs["bakery_cpi"]["release"] == "bakery"
    bakery_release = next(r for r in manifest["releases"] if r["name"] == "bakery")
    assert bakery_release["url"].startswith("file://") and bakery_release["url"].endswith(
        "bakery.tgz"
    )
    cpi = jobs["bakery_cpi"]["properties"]
    assert cpi["bakery"]["url"] == f"https://{BAKERY_IP}:8443"
    # the same NATS the director gives its IaaS CPI's agents
    assert cpi["agent"]["mbus"] == manifest["instance_groups"][0]["properties"]["agent"]["mbus"]


def test_agents_get_the_director_s_nats_and_dav_blobstore_as_the_agent_parses_them(
    director, tmp_path
):
    manifest, creds = director
    properties = bosh_jobs(manifest)["bakery_cpi"]["properties"]
    job_dir = render_job("bakery_cpi", properties, tmp_path / "jobs")
    config = load_config(str(job_dir / "config" / "cpi.json"))

    settings = agent_settings.build(
        agent_id="agent-1",
        vm_cid="0" * 32,
        networks={"pis": {"type": "dynamic", "preconfigured": True}},
        env={},
        ephemeral_disk=None,
        mbus=config.agent_mbus(),
        ntp=config.ntp,
        blobstore=config.blobstore,
    )

    mbus = urlparse(settings["mbus"])
    assert (mbus.scheme, mbus.hostname, mbus.port) == ("nats", DIRECTOR_IP, 4222)
    blobstore = settings["blobstore"]
    assert blobstore["provider"] == "dav"
    # the dav client's config (bosh-davcli config.Config): Endpoint, User, Password and
    # TLS.Cert.CA, which Go's JSON decoding matches to these keys
    options = blobstore["options"]
    assert set(options) == {"endpoint", "user", "password", "tls"}
    assert options["endpoint"] == f"https://{DIRECTOR_IP}:25250"
    assert (options["user"], options["password"]) == ("agent", creds["blobstore_agent_password"])
    assert options["tls"] == {"cert": {"ca": creds["blobstore_ca"]["certificate"]}}
    director_agents = manifest["instance_groups"][0]["properties"]["agent"]["env"]["bosh"]
    assert options["endpoint"] == director_agents["blobstores"][0]["options"]["endpoint"]
    assert settings["ntp"] == director_agents["ntp"]


def test_the_cpi_config_and_cloud_config_name_each_other_s_cpis_and_azs():
    cpi_config = bosh_int(
        RELEASE / "bosh-release" / "cpi-config.yml", "-v", "iaas_cpi_type=vsphere"
    )
    cloud_config = bosh_int(
        RELEASE / "bosh-release" / "cloud-config.yml",
        "-v",
        "pi_cidr=10.0.0.0/24",
        "-v",
        "pi_gateway=10.0.0.1",
        "-v",
        "pi_dns=10.0.0.1",
        "-v",
        f"bakery_ip={BAKERY_IP}",
        "-v",
        "pi_dhcp_range=10.0.0.100-10.0.0.254",
    )

    cpis = {cpi["name"]: cpi["type"] for cpi in cpi_config["cpis"]}
    assert cpis == {"iaas": "vsphere", "bakery": "bakery"}
    # the director runs /var/vcap/jobs/<type>_cpi/bin/cpi: the job and its executable
    assert "bin/cpi" in job_spec("bakery_cpi")["templates"].values()
    assert {az["cpi"] for az in cloud_config["azs"]} == set(cpis)
    azs = {az["name"] for az in cloud_config["azs"]}
    for network in cloud_config["networks"]:
        for subnet in network["subnets"]:
            assert set(subnet["azs"]) <= azs
    # the Pis' agent would restart systemd-resolved for a dns list; Pi OS has none
    (pis,) = [n for n in cloud_config["networks"] if n["name"] == "pis-dynamic"]
    assert all("dns" not in subnet for subnet in pis["subnets"])
