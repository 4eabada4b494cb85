"""Bootloader logs end to end, as root, in netns mode: simulated Pi 4 and Pi 5 whose
EEPROMs set NETCONSOLE send their bootloader's lines over UDP from their own namespace
while they boot; Bakery files them under the Pi that sent them. A Pi 3B+ (no EEPROM)
sends none, and lines from a Pi's address at a MAC that is not the Pi's are refused."""

from __future__ import annotations

import pytest

from bakery.sim.models import SimPi
from bakery.sim.network import NETNS_TOOLS
from bakery.sim.runner import SimulatedSite, SiteOptions
from bakery.sim.wait import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.root, pytest.mark.tools(*NETNS_TOOLS)]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    work = tmp_path_factory.mktemp("netconsole-site")
    options = SiteOptions(
        root=work / "data",
        workdir=work / "site",
        pis=3,
        models=["4B", "5", "3B+"],
        mode="netns",
        power_on_gap=0,
        netconsole=True,
    )
    with SimulatedSite(options) as running:
        yield running


def boot(site: SimulatedSite, pi: SimPi) -> dict:
    made = site.api.post("/bakes", {"bakeform": "demo", "serial": pi.serial})
    wait_until(lambda: pi.state in ("booted", "failed"), 30, what=f"Pi {pi.serial} to boot")
    assert pi.state == "booted", pi.reason
    return made


def console(site: SimulatedSite, pi: SimPi) -> list[str]:
    return [entry["line"] for entry in site.api.get(f"/pis/{pi.serial}/console")]


def test_each_pis_bootloader_log_is_filed_under_it(site):
    pi4, pi5, pi3 = site.pis
    for pi in site.pis:
        boot(site, pi)

    logs = {
        pi.model: wait_until(lambda p=pi: console(site, p), 10, what="a log") for pi in (pi4, pi5)
    }

    for pi in (pi4, pi5):
        assert (
            logs[pi.model][0]
            == f"RPi: BOOTLOADER release VERSION:sim DATE: 2026/12/01 board {pi.model}"
        )
        assert f"boot: mode NETWORK 2 serial {pi.serial}" in logs[pi.model]
        assert f"NET_BOOT: server {site.network.server_ip} from {pi.address}" in logs[pi.model]
    assert console(site, pi3) == []


def test_lines_from_a_pis_address_at_another_mac_are_refused(site):
    pi4 = site.pis[0]
    real_mac = pi4.mac
    site.api.patch(f"/pis/{pi4.serial}", {"mac": "dc:a6:32:ff:ff:ff"})
    before = console(site, pi4)
    power_ons = len(pi4.power_ons)
    try:
        site.api.post(f"/pis/{pi4.serial}/power", {"action": "cycle"})
        wait_until(
            lambda: len(pi4.power_ons) > power_ons and pi4.state in ("booted", "failed"),
            30,
            what="a boot",
        )
        assert console(site, pi4) == before
    finally:
        site.api.patch(f"/pis/{pi4.serial}", {"mac": real_mac})
