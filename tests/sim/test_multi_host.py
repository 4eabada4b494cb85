"""Three Bakery hosts on one PostgreSQL, as root in netns mode: each ``bakery serve`` with
its own data dir, nfs-ganesha, dnsmasq and TFTP on its own Pi segment (a bridge with ten
simulated Pi 4s, each in its own network namespace). Bake requests reach any host's API;
each bake is made, exported and booted by its Pi's host, from that host's copy of the
bakeform, and unbaked through yet another host's API. A host killed mid-bake leaves the
others serving, shows its Pis as ``host_down``, and after its restart has nothing
half-made left and has touched no other host's bake."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import pytest

from bakery.client import ApiClient, ApiError
from bakery.datadir import claim_data_dir
from bakery.sim.network import NETNS_TOOLS
from bakery.sim.runner import FIRST_SERIAL, SimulatedSite, SiteOptions
from bakery.sim.wait import wait_until
from tests.conftest import failed, install_gated_ppi
from tests.support.postgres import create_database

pytestmark = [
    pytest.mark.slow,
    pytest.mark.root,
    pytest.mark.postgres,
    pytest.mark.tools(*NETNS_TOOLS),
]

HOSTS = 3
PIS_PER_HOST = 10


class Rack:
    """One host: its simulated site, its name and its Pis' serials."""

    def __init__(self, site: SimulatedSite, name: str) -> None:
        self.site = site
        self.name = name
        self.serials = {pi.serial for pi in site.pis}

    @property
    def api(self) -> ApiClient:
        assert self.site.api is not None
        return self.site.api

    @property
    def root(self) -> Path:
        return self.site.options.root

    def bake_dirs(self) -> set[str]:
        bakes = self.root / "bakes"
        return (
            {p.name for p in bakes.iterdir() if not p.name.startswith(".")}
            if bakes.exists()
            else set()
        )


@pytest.fixture(scope="module")
def racks(tmp_path_factory, pg_admin_url) -> Iterator[list[Rack]]:
    database = create_database(pg_admin_url)
    work = tmp_path_factory.mktemp("racks")
    with ExitStack() as stack:
        racks: list[Rack] = []
        for number in range(1, HOSTS + 1):
            name = f"rack-{number}"
            ppi_dir = work / name / "ppi"
            ppi_dir.mkdir(parents=True)
            options = SiteOptions(
                root=work / name / "data",
                workdir=work / name / "site",
                pis=PIS_PER_HOST,
                models=["4B"],
                mode="netns",
                power_on_gap=0,
                first_serial=FIRST_SERIAL + 0x100 * number,
                bakeform="demo" if number == 1 else None,  # the others copy it
                settings={"database_url": database, "host_id": name, "ppi_dir": str(ppi_dir)},
            )
            if racks:  # the tokens are the database's: the first host's admin token serves
                claim_data_dir(options.root)
                token = racks[0].site.server.token
                (options.root / "admin-token").write_text(token + "\n")
                os.chmod(options.root / "admin-token", 0o600)
            racks.append(Rack(stack.enter_context(SimulatedSite(options)), name))
        yield racks


@pytest.fixture(autouse=True)
def server_logs_on_failure(request, racks) -> Iterator[None]:
    """A failed test shows what each host's server logged last (its output is captured)."""
    yield
    if failed(request):
        for rack in racks:
            tail = rack.site.server.log_file.read_text(errors="replace").splitlines()[-80:]
            print(f"--- {rack.name}: the end of {rack.site.server.log_file}", *tail, sep="\n")


def cli(rack: Rack, *args: str) -> str:
    """What the ``bakery`` CLI prints, asked through ``rack``'s API."""
    command = [str(Path(sys.executable).with_name("bakery")), "--url", rack.site.server.url]
    env = {"PATH": os.environ["PATH"], "BAKERY_TOKEN": rack.site.server.token}
    done = subprocess.run([*command, *args], env=env, capture_output=True, text=True, check=True)
    return done.stdout


def host_of(racks: list[Rack], serial: str) -> Rack:
    (rack,) = [rack for rack in racks if serial in rack.serials]
    return rack


def test_sixty_bakes_over_three_apis_make_thirty_each_on_its_pi_s_host(racks):
    def bake(number: int) -> dict | str:
        try:
            return racks[number % HOSTS].api.post("/bakes", {"bakeform": "demo"})
        except ApiError as exc:
            return exc.code

    with ThreadPoolExecutor(30) as pool:
        answers = list(pool.map(bake, range(2 * HOSTS * PIS_PER_HOST)))

    bakes = [answer for answer in answers if isinstance(answer, dict)]
    refusals = Counter(answer for answer in answers if isinstance(answer, str))
    assert refusals == {"no_pi_available": HOSTS * PIS_PER_HOST}
    assert len(bakes) == HOSTS * PIS_PER_HOST
    assert len({bake["serial"] for bake in bakes}) == len(bakes)  # never a Pi twice
    for bake in bakes:
        rack = host_of(racks, bake["serial"])
        assert bake["host"] == rack.name
        assert (rack.root / "bakes" / bake["id"] / "root" / "etc").is_dir()
        assert bake["root_export"] == (
            f"{rack.site.network.server_ip}:{rack.root}/bakes/{bake['id']}/root"
        )
        assert all(bake["id"] not in other.bake_dirs() for other in racks if other is not rack)
    shown = racks[2].api.get("/bakeforms/demo")
    assert shown["source_host"] == "rack-1"
    assert shown["hosts"] == {rack.name: "ready" for rack in racks}
    assert '"rack-3": "ready"' in cli(racks[2], "bakeform", "show", "demo")

    # every simulated Pi boots from its own host: the only one on its segment
    for rack in racks:
        wait_until(
            lambda r=rack: all(pi.state in ("booted", "failed") for pi in r.site.pis),
            90,
            what=f"{rack.name}'s Pis to boot",
        )
        assert {(pi.serial, pi.state, pi.reason) for pi in rack.site.pis} == {
            (pi.serial, "booted", "") for pi in rack.site.pis
        }
        for pi in rack.site.pis:
            served = racks[0].api.get(f"/pis/{pi.serial}/events", limit=100)
            assert any(e["message"].startswith("cmdline.txt ") for e in served)

    # unbaked through another host's API than the one that made each bake
    names = [rack.name for rack in racks]
    for bake in bakes:
        other = racks[(names.index(bake["host"]) + 1) % HOSTS]
        assert other.api.delete(f"/bakes/{bake['id']}")["state"] == "unbaked"
    for rack in racks:
        assert rack.bake_dirs() == set()
        assert {pi["state"] for pi in rack.api.get("/pis")} == {"available"}
        exports = (rack.site.ganesha.exports_file).read_text()
        assert "/bakes/" not in exports


def test_a_host_killed_mid_bake_leaves_the_others_serving_and_nothing_half_made(racks):
    first, second, killed = racks
    others = [
        first.api.post("/bakes", {"bakeform": "demo", "serial": sorted(first.serials)[0]}),
        second.api.post("/bakes", {"bakeform": "demo", "serial": sorted(second.serials)[0]}),
    ]
    gate = killed.root.parent / "gate"
    program = install_gated_ppi(Path(killed.site.options.settings["ppi_dir"]), gate, "poweron")
    stuck = sorted(killed.serials)[0]
    killed.api.patch(
        f"/pis/{stuck}", {"power_driver": "ppi", "power_settings": {"program": program}}
    )
    with ThreadPoolExecutor(1) as pool:
        # through another host's API: the bake is rack-3's job, and rack-3 dies doing it
        pending = pool.submit(first.api.post, "/bakes", {"bakeform": "demo", "serial": stuck})
        wait_until(lambda: (gate / "started").exists(), 30, what="the bake's power-on")
        killed.site.server.kill()
        with pytest.raises(ApiError) as lost:
            pending.result(timeout=120)
    assert (lost.value.status, lost.value.code) == (503, "host_down")

    # the others keep serving; the dead host's Pis show host_down and get no new bakes
    wait_until(
        lambda: first.api.get(f"/pis/{stuck}")["host_down"], 60, what="rack-3 to be seen down"
    )
    fresh = second.api.post("/bakes", {"bakeform": "demo"})
    assert fresh["host"] in (first.name, second.name)
    with pytest.raises(ApiError) as refused:
        first.api.post("/bakes", {"bakeform": "demo", "serial": sorted(killed.serials)[1]})
    assert (refused.value.status, refused.value.code) == (503, "host_down")

    # back again: its half-made bake is rolled back, and nobody else's was touched
    killed.site.server.start()
    assert killed.api.get(f"/pis/{stuck}")["state"] == "available"
    assert not killed.api.get(f"/pis/{stuck}")["host_down"]
    assert killed.bake_dirs() == set()
    assert f"{killed.root}/bakes/" not in killed.site.ganesha.exports_file.read_text()
    for bake in [*others, fresh]:
        rack = host_of(racks, bake["serial"])
        assert rack.api.get(f"/bakes/{bake['id']}")["state"] == "baked"
        assert bake["id"] in rack.bake_dirs()
        assert bake["id"] in rack.site.ganesha.exports_file.read_text()
        killed.api.delete(f"/bakes/{bake['id']}")  # through the restarted host
