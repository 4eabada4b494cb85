"""End to end, as root, in netns mode: simulated Pi 3B+, 4 and 5 each in its own
network namespace on a bridge, booting through the real dnsmasq (proxy DHCP), Bakery's
TFTP server and nfs-ganesha, with ``bakery serve`` baking them and powering them
through its ``webhook`` driver and the simulator's power API."""

from __future__ import annotations

import json

import pytest

from bakery.client import ApiClient
from bakery.sim import nfs
from bakery.sim.models import SimPi
from bakery.sim.network import NETNS_TOOLS
from bakery.sim.runner import SimulatedSite, SiteOptions
from bakery.sim.wait import wait_until
from tests.cpi import harness

pytestmark = [
    pytest.mark.slow,
    pytest.mark.root,
    pytest.mark.tools(*NETNS_TOOLS),
]

MODELS = ["3B+", "4B", "5"]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    work = tmp_path_factory.mktemp("site")
    options = SiteOptions(
        root=work / "data",
        workdir=work / "site",
        pis=7,
        models=MODELS,
        mode="netns",
        power_on_gap=0,
    )
    with SimulatedSite(options) as running:
        yield running


def booted(site: SimulatedSite, *pis: SimPi) -> None:
    wait_until(
        lambda: all(pi.state in ("booted", "failed") for pi in pis), 30, what="the Pis to boot"
    )
    assert [(pi.serial, pi.state, pi.reason) for pi in pis] == [
        (pi.serial, "booted", "") for pi in pis
    ]


def read_as(site: SimulatedSite, pi: SimPi, path: str) -> bytes:
    """``path`` read over NFS from ``pi``'s namespace, so from its address."""
    server = site.network.server_ip
    return site.network.call(pi, nfs.read_file, server, path, site.network.nfs_port)


def root_of(site: SimulatedSite, bake: dict) -> str:
    return f"{site.options.root}/bakes/{bake['id']}/root"


def test_bakes_on_pi_3bplus_4_and_5_boot_through_dnsmasq_tftp_and_their_nfs_root(site, bake):
    pis = site.pis[:3]
    for pi in pis:
        bake(pi)

    booted(site, *pis)

    assert sorted(pi.model for pi in pis) == sorted(MODELS)
    for pi in pis:
        assert pi.hostname == f"pi-{pi.serial}"
        details = [entry.detail for entry in pi.timeline]
        assert f"proxy offer from {site.network.server_ip}" in details
        assert f"TFTP server {site.network.server_ip}:69" in details
        events = site.api.get(f"/pis/{pi.serial}/events", limit=100)
        messages = [event["message"] for event in events]
        assert "powered on" in messages
        assert any(message.startswith("cmdline.txt ") for message in messages)
        assert any(e["kind"] == "dhcp" and "proxy" in e["message"] for e in events), messages


def test_each_booted_pi_says_its_userspace_is_up_and_the_boot_takes_seconds(site, bake):
    pis = site.pis[5:7]
    for pi in pis:
        bake(pi)
    booted(site, *pis)

    for pi in pis:
        up = wait_until(
            lambda p=pi: [
                e
                for e in site.api.get(f"/pis/{p.serial}/events", limit=100)
                if e["data"].get("step") == "userspace_up"
            ],
            10,
            what="the boot report",
        )
        assert 0 < up[-1]["data"]["seconds"] < 30
        assert site.api.get(f"/pis/{pi.serial}")["boot"] == "up"
        assert pi.timeline[-1].detail == "boot report: HTTP 200"


def test_a_pi_reads_its_own_root_and_disk_but_is_refused_another_pis(site, bake):
    mine, other = site.pis[3], site.pis[4]
    my_bake, other_bake = bake(mine), bake(other)
    booted(site, mine, other)
    my_disk = site.api.post("/disks", {"size_mib": 1, "bake_id": my_bake["id"]})
    other_disk = site.api.post("/disks", {"size_mib": 1, "bake_id": other_bake["id"]})

    def disk_image(disk: dict) -> str:
        return f"{site.options.root}/disks/{disk['id']}/disk.img"

    assert read_as(site, mine, f"{root_of(site, my_bake)}/etc/hostname") == (
        f"pi-{mine.serial}\n".encode()
    )
    wait_until(lambda: _readable(site, mine, disk_image(my_disk)), 15, what="my disk export")
    with pytest.raises(nfs.NfsError):
        read_as(site, mine, f"{root_of(site, other_bake)}/etc/hostname")
    with pytest.raises(nfs.NfsError):
        read_as(site, mine, disk_image(other_disk))


def _readable(site: SimulatedSite, pi: SimPi, path: str) -> bool:
    try:
        return len(read_as(site, pi, path)) == 1024 * 1024
    except nfs.NfsError:
        return False


def test_unbake_powers_the_pi_off_through_the_webhook_and_removes_its_exports(site, bake):
    pi = site.pis[5]
    record = bake(pi)
    booted(site, pi)
    hostname = f"{root_of(site, record)}/etc/hostname"

    site.api.delete(f"/bakes/{record['id']}")

    assert (pi.powered, pi.state) == (False, "off")
    assert root_of(site, record) not in site.ganesha.exports_file.read_text()
    wait_until(lambda: not _can_read(site, pi, hostname), 15, what="the export to go")
    events = ApiClient(site.server.url, site.server.token).get(f"/pis/{pi.serial}/events")
    assert any("power off via webhook" in event["message"] for event in events)


def _can_read(site: SimulatedSite, pi: SimPi, path: str) -> bool:
    try:
        read_as(site, pi, path)
    except nfs.NfsError:
        return False
    return True


def test_a_bosh_vm_boots_and_finds_its_agent_settings_and_disks_in_its_root(site, tmp_path):
    """The CPI, as the director runs it, on the simulated fleet: create_vm bakes and
    powers a Pi, which boots and reads the agent settings from its own NFS root; after
    attach_disk, the disks list the disk agent reads there names the disk."""
    pi = site.pis[6]
    config = harness.write_config(tmp_path / "cpi.json", site.server.url, site.server.token)

    def cpi(method: str, *arguments):
        return harness.ok(harness.run_cpi(config, harness.request(method, *arguments)))

    networks = {"default": {"type": "dynamic", "default": ["dns", "gateway"]}}
    properties = {"serial": pi.serial, "ephemeral_disk_mib": 8}
    vm_cid, _ = cpi("create_vm", "agent-on-a-pi", "demo", properties, networks, [], {})
    try:
        booted(site, pi)
        root = f"{site.options.root}/bakes/{vm_cid}/root"
        settings = json.loads(read_as(site, pi, f"{root}/{harness.SETTINGS_FILE}"))
        assert settings["agent_id"] == "agent-on-a-pi"
        assert settings["networks"]["default"]["mac"] == pi.mac
        disk_cid = cpi("create_disk", 16, {}, vm_cid)
        assert cpi("attach_disk", vm_cid, disk_cid) == f"/dev/disk/by-id/bakery-{disk_cid}"
        # Rewritten by the server a moment ago: the Pi sees the new files at once.
        disks = read_as(site, pi, f"{root}/{harness.DISKS_FILE}").decode()
        assert disk_cid in disks.split()
        settings = json.loads(read_as(site, pi, f"{root}/{harness.SETTINGS_FILE}"))
        assert disk_cid in settings["disks"]["persistent"]
    finally:
        cpi("delete_vm", vm_cid)
