"""Fixtures for the simulated Pis: a real Bakery TFTP server on loopback over a baked
data dir (SQLite: the database is not what these tests are about), and simulated Pis
pointed at it."""

from __future__ import annotations

from pathlib import Path

import pytest

from bakery.config import load_settings
from bakery.sim.bootloader import Timeouts
from bakery.sim.image import build_sd_image, firmware_files, fleet_boot_files
from bakery.sim.models import SimPi, make_pis
from bakery.sim.network import LoopbackNetwork
from bakery.sim.simulator import Simulator

FIRST_SERIAL = 0x1234AB00
#: Short waits: a failure shows up in a second, not after a real bootloader's 30 s.
FAST = Timeouts(dhcp=2, tftp_file=1, nfs=2)


@pytest.fixture
def db_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'bakery.db'}"


@pytest.fixture
def settings(tmp_path, db_url):
    firmware = tmp_path / "firmware"
    firmware.mkdir()
    for name, content in firmware_files().items():
        (firmware / name).write_bytes(content)
    return load_settings(
        environ={},
        root=tmp_path / "data",
        database_url=db_url,
        power_on_gap=0,
        nfs_backend="none",
        firmware_dir=str(firmware),
        webhook_hosts=["127.0.0.1"],
        trust_loopback=True,
        tftp_retries=2,
    )


@pytest.fixture(scope="session")
def fleet_image(tmp_path_factory) -> Path:
    """An SD image whose boot partition boots every simulated model."""
    return build_sd_image(tmp_path_factory.mktemp("fleet") / "fleet.img", boot=fleet_boot_files())


@pytest.fixture
def make_fleet(fleet, fleet_image, tftp_server):
    """Simulated Pis of the given models, registered and baked with the fleet image,
    pointed at the TFTP server; every one is powered off at the end."""
    simulators = []

    def make(*models: str, image=fleet_image, server=None, bake: bool = True) -> Simulator:
        network = LoopbackNetwork(server or tftp_server.address)
        pis = make_pis(len(models), list(models), network.addresses(len(models)), FIRST_SERIAL)
        with open(image, "rb") as data:
            fleet.import_bakeform("sim", data)
        for pi in pis:
            fleet.register_pi(pi.serial, ip=pi.address, mac=pi.mac, model=pi.model)
            if bake:
                fleet.bake("sim", serial=pi.serial)
        simulators.append(Simulator(pis, network, FAST))
        return simulators[-1]

    yield make
    for simulator in simulators:
        simulator.stop()


@pytest.fixture
def bake(site):
    """For modules with a ``site`` (a SimulatedSite): bake a given Pi with the site's
    bakeform; whatever a test baked is unbaked after it."""
    baked = []

    def make(pi: SimPi) -> dict:
        baked.append(site.api.post("/bakes", {"bakeform": "demo", "serial": pi.serial}))
        return baked[-1]

    yield make
    for record in baked:
        if site.api.get(f"/bakes/{record['id']}")["state"] != "unbaked":
            site.api.delete(f"/bakes/{record['id']}")
