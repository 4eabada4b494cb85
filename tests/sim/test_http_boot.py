"""HTTP boot end to end, as root, in netns mode: simulated Pi 4 and Pi 5 whose EEPROMs are
set to HTTP boot get their proxy offer from the real dnsmasq, fetch their bake's signed
boot.img from Bakery's HTTP boot server, check it with the key in their EEPROM and mount
their NFS root from nfs-ganesha; a Pi 3B+ on the same site keeps booting over TFTP."""

from __future__ import annotations

import pytest

from bakery.sim import http_boot
from bakery.sim.models import SimPi
from bakery.sim.network import NETNS_TOOLS
from bakery.sim.runner import SimulatedSite, SiteOptions
from bakery.sim.wait import wait_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.root,
    pytest.mark.tools(*NETNS_TOOLS, "mkfs.fat", "mcopy", "mtype", "openssl"),
]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    work = tmp_path_factory.mktemp("http-site")
    options = SiteOptions(
        root=work / "data",
        workdir=work / "site",
        pis=4,
        models=["4B", "5", "3B+", "4B"],
        mode="netns",
        power_on_gap=0,
        http_boot=True,
    )
    with SimulatedSite(options) as running:
        yield running


def settled(*pis: SimPi) -> None:
    wait_until(lambda: all(pi.state in ("booted", "failed") for pi in pis), 30, what="the boots")


def messages(site: SimulatedSite, pi: SimPi) -> list[str]:
    return [event["message"] for event in site.api.get(f"/pis/{pi.serial}/events")]


def test_pi_4_and_pi_5_boot_over_http_into_their_nfs_roots(site, bake):
    pi4, pi5, pi3 = site.pis[:3]
    tftp_before = [pi.tftp_bytes for pi in (pi4, pi5)]
    bakes = [bake(pi) for pi in (pi4, pi5, pi3)]

    settled(pi4, pi5, pi3)

    assert [(pi.state, pi.reason) for pi in (pi4, pi5, pi3)] == [("booted", "")] * 3
    assert [pi.hostname for pi in (pi4, pi5, pi3)] == [f"pi-{pi.serial}" for pi in (pi4, pi5, pi3)]
    assert [pi.tftp_bytes for pi in (pi4, pi5)] == tftp_before, "no TFTP for an HTTP boot"
    assert pi4.http_bytes > 0 and pi5.http_bytes > 0
    assert [made["boot_protocol"] for made in bakes] == ["http", "http", "tftp"]
    for pi in (pi4, pi5):
        served = [m for m in messages(site, pi) if m.endswith(" over HTTP")]
        assert [m.split()[0] for m in served] == ["boot.img", "boot.sig"]
    assert not [m for m in messages(site, pi3) if m.endswith(" over HTTP")]


def test_a_tampered_boot_img_is_refused_by_the_bootloader(site, bake):
    pi = site.pis[3]
    made = bake(pi)
    settled(pi)
    assert pi.state == "booted", pi.reason
    image = site.options.root / "bakes" / made["id"] / "http/boot.img"
    data = bytearray(image.read_bytes())
    data[len(data) // 2] ^= 0xFF
    image.write_bytes(bytes(data))

    site.api.post(f"/bakes/{made['id']}/power", {"action": "cycle"})
    wait_until(lambda: pi.state == "failed", 30, what="the Pi to refuse the image")

    assert "boot.img refused" in pi.reason and "sha256 mismatch" in pi.reason


def test_another_pis_boot_img_is_refused_by_bakery(site, bake):
    asking, owner = site.pis[0], site.pis[1]
    bake(owner)
    settled(owner)
    assert owner.http_boot is not None
    theirs = owner.http_boot  # its EEPROM's URL, asked for from another Pi's address

    for name in ("boot.img", "boot.sig"):
        with pytest.raises(OSError, match="HTTP 404"):
            site.network.call(asking, http_boot.fetch, theirs, name, asking.address, 5.0)

    assert any("not taken" in message for message in messages(site, owner))
    assert site.api.get(f"/pis/{owner.serial}")["ip"] == owner.address
