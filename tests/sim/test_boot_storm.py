"""A boot storm, as root in netns mode: 30 simulated Pi 4s baked at once through the
API all boot through dnsmasq, Bakery's TFTP server and nfs-ganesha, and Bakery spaces
their power-ons by ``power_on_gap`` however many bakes arrive together."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from bakery.client import ApiClient
from bakery.sim.network import NETNS_TOOLS
from bakery.sim.runner import SimulatedSite, SiteOptions
from bakery.sim.wait import wait_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.root,
    pytest.mark.tools(*NETNS_TOOLS),
]

STORM = 30
GAP = 0.2


@pytest.fixture
def site(tmp_path):
    options = SiteOptions(
        root=tmp_path / "data",
        workdir=tmp_path / "site",
        pis=STORM,
        models=["4B"],
        mode="netns",
        power_on_gap=GAP,
        workers=4,
    )
    with SimulatedSite(options) as running:
        yield running


def test_thirty_pi4s_baked_together_all_boot_with_power_ons_spaced_by_the_gap(site):
    def bake_one(_: int) -> dict:
        api = ApiClient(site.server.url, site.server.token)
        return api.post("/bakes", {"bakeform": "demo", "model": "4B"})

    with ThreadPoolExecutor(10) as pool:
        bakes = list(pool.map(bake_one, range(STORM)))

    wait_until(
        lambda: all(pi.state in ("booted", "failed") for pi in site.pis), 60, what="every boot"
    )
    assert sorted(bake["serial"] for bake in bakes) == sorted(pi.serial for pi in site.pis)
    assert [(pi.serial, pi.state, pi.reason, pi.hostname) for pi in site.pis] == [
        (pi.serial, "booted", "", f"pi-{pi.serial}") for pi in site.pis
    ]
    power_ons = sorted(pi.power_ons[0] for pi in site.pis)
    gaps = [later - earlier for earlier, later in zip(power_ons, power_ons[1:], strict=False)]
    assert min(gaps) >= GAP, f"power-ons {min(gaps):.3f} s apart, gap is {GAP} s"
