"""Metrics scraped after a boot storm, as root in netns mode, checked against what
happened: simulated Pi 3B+, 4 and 5 baked at once through the API of a ``bakery serve``
with two gunicorn workers and two TFTP workers boot through dnsmasq, the TFTP server and
nfs-ganesha and report their userspace up; the counts of all those processes, added up on
one page, equal what the fleet's timelines and the Pis themselves say."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from bakery.client import ApiClient
from bakery.metrics import file_kind
from bakery.sim.network import NETNS_TOOLS
from bakery.sim.runner import SimulatedSite, SiteOptions
from bakery.sim.wait import wait_until
from tests.support.metrics import Page

pytestmark = [
    pytest.mark.slow,
    pytest.mark.root,
    pytest.mark.tools(*NETNS_TOOLS),
]

STORM = 9
MODELS = ["3B+", "4B", "5"]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    work = tmp_path_factory.mktemp("storm")
    options = SiteOptions(
        root=work / "data",
        workdir=work / "site",
        pis=STORM,
        models=MODELS,
        mode="netns",
        power_on_gap=0,
        workers=2,
        settings={"tftp_workers": 2},
    )
    with SimulatedSite(options) as running:
        yield running


def reported(pi) -> bool:
    """The Pi booted and its root's boot report was answered (the last thing it does)."""
    return bool(pi.timeline) and pi.timeline[-1].detail.startswith("boot report: HTTP")


@pytest.fixture(scope="module")
def storm(site) -> list[dict]:
    """Every Pi baked at once (four requests in flight), then booted up to its report."""

    def bake_one(_: int) -> dict:
        api = ApiClient(site.server.url, site.server.token)
        return api.post("/bakes", {"bakeform": "demo"})

    with ThreadPoolExecutor(4) as pool:
        bakes = list(pool.map(bake_one, range(STORM)))
    wait_until(lambda: all(map(reported, site.pis)), 120, what="every Pi to boot and report")
    assert [(pi.serial, pi.state) for pi in site.pis] == [(pi.serial, "booted") for pi in site.pis]
    return bakes


def scrape(site) -> Page:
    answer = requests.get(f"{site.server.url}/metrics", headers=site.server.session().headers)
    assert answer.status_code == 200, answer.text
    return Page(answer.text)


def events(site) -> list[dict]:
    return [e for pi in site.pis for e in site.api.get(f"/pis/{pi.serial}/events", limit=500)]


def tftp_served(site) -> list[dict]:
    """What the fleet's timelines say the TFTP server sent (HTTP boot's say "http")."""
    return [
        e["data"]
        for e in events(site)
        if e["data"].get("step") == "served" and e["data"].get("protocol") != "http"
    ]


def bare_downloads(site) -> int:
    """Files the Pis fetched without a serial prefix (the Pi 3 ROM's bootcode.bin): on no
    timeline of the fleet's, so counted from the Pis' own."""
    return sum(
        entry.detail.startswith("bootcode.bin ")
        for pi in site.pis
        for entry in pi.timeline
        if entry.step == "tftp"
    )


def what_was_sent(site) -> tuple[Counter[str], Counter[str]]:
    """(transfers, bytes) by file kind, from the timelines."""
    transfers, sizes = Counter[str](), Counter[str]()
    for data in tftp_served(site):
        transfers[file_kind(data["file"])] += 1
        sizes[file_kind(data["file"])] += data["size"]
    transfers["firmware"] += bare_downloads(site)
    return transfers, sizes


def test_tftp_transfers_and_bytes_equal_what_was_served_by_kind(site, storm):
    def counted_as_sent() -> Page | None:
        page = scrape(site)  # first: the timelines may only catch up with it
        transfers, _ = what_was_sent(site)
        return page if page.by("bakery_tftp_transfers_total", "kind") == transfers else None

    page = wait_until(counted_as_sent, 30, what="the counts and the timelines to agree")
    transfers, sizes = what_was_sent(site)

    assert transfers.total() > STORM * 5
    assert set(transfers) >= {"firmware", "config", "dtb", "overlay", "cmdline", "kernel"}
    assert page.total("bakery_tftp_bytes_total") == sum(pi.tftp_bytes for pi in site.pis)
    counted_bytes = page.by("bakery_tftp_bytes_total", "kind")
    bootcode = counted_bytes.pop("firmware") - sizes.pop("firmware")
    assert counted_bytes == sizes
    assert bootcode > 0
    assert page.total("bakery_tftp_failures_total") == 0


def test_bakes_pis_and_boots_equal_what_was_made(site, storm):
    page = scrape(site)
    ups = [e["data"]["seconds"] for e in events(site) if e["data"].get("step") == "userspace_up"]

    assert len(storm) == STORM
    assert page.total("bakery_bakes_started_total") == STORM
    assert page.total("bakery_bakes_failed_total") == 0
    assert page.total("bakery_bake_duration_seconds_count") == STORM
    assert page.by("bakery_pis", "state")["baked"] == STORM == page.total("bakery_pis")
    assert page.by("bakery_live_bakes", "state") == {"preparing": 0, "baked": STORM, "unbaking": 0}
    assert page.by("bakery_boots", "status") == {"booting": 0, "up": STORM, "stalled": 0}
    assert len(ups) == STORM
    assert page.total("bakery_boot_duration_seconds_count") == len(ups)
    assert page.total("bakery_boot_duration_seconds_sum") == pytest.approx(sum(ups), abs=0.01)
    assert page.total("bakery_boot_duration_max_seconds") == pytest.approx(max(ups), abs=0.01)


def test_api_dhcp_power_and_import_counts_equal_what_was_asked(site, storm):
    page = scrape(site)
    timeline = events(site)
    offers = [e for e in timeline if e["kind"] == "dhcp" and e["message"].endswith(" proxy")]
    power_ons = [e for e in timeline if e["kind"] == "power" and e["data"]["action"] == "on"]

    bakes = {"route": "/api/v1/bakes", "method": "POST"}
    assert page.total("bakery_api_requests_total", status="201", **bakes) == STORM
    assert page.total("bakery_api_requests_total", **bakes) == STORM
    assert page.total("bakery_api_request_duration_seconds_count", **bakes) == STORM
    assert page.total("bakery_dhcp_offers_total") == len(offers) >= STORM
    calls = page.total("bakery_power_calls_total", driver="webhook", action="on")
    assert calls == len(power_ons) >= STORM
    assert page.total("bakery_bakeform_import_duration_seconds_count", outcome="ok") == 1


def test_the_page_adds_up_the_counts_of_several_processes(site, storm):
    directory = site.options.root / "metrics"
    pids = {path.stem.split("_")[-1] for path in directory.glob("counter_*.db")}

    # the API's workers (bakes), the netboot process (offers), the TFTP processes (files)
    assert len(pids) >= 3
