"""A Pi's exports follow its address only to an address its own network card holds: the
TFTP server in one network namespace, the Pi LAN in another (a veth pair), and the
server's neighbour table deciding whose an address is."""

from __future__ import annotations

import dataclasses

import pytest

from bakery.models import Pi
from bakery.netboot.tftp import TftpServer, listening_socket
from bakery.sim.image import REQUIRED_TOOLS
from bakery.sim.tftp_client import PiClient, TftpError
from bakery.sim.wait import wait_until
from tests.netboot.conftest import SERVER_IP
from tests.support import netns

pytestmark = [
    pytest.mark.root,
    pytest.mark.tools("ip", *REQUIRED_TOOLS),
]

SERIAL = "1234abcd"
PI_MAC = "dc:a6:32:00:00:57"
PI_OLD_IP = "10.99.0.57"


@pytest.fixture
def settings(tftp_settings):
    return dataclasses.replace(tftp_settings, nfs_server=SERVER_IP)


@pytest.fixture
def server(wire, settings, fleet):
    """Bakery's TFTP server inside the server namespace (its threads, and so the
    neighbour table it reads, are that namespace's)."""
    server_side, _ = wire
    tftp = TftpServer(
        settings, fleet.boot_source(), sock=server_side.call(listening_socket, SERVER_IP, 0)
    )
    server_side.call(tftp.start)
    try:
        yield tftp
    finally:
        tftp.stop()


@pytest.fixture
def baked(bake_pi):
    return bake_pi(SERIAL, mac=PI_MAC, ip=PI_OLD_IP)


def take_address(lan: netns.Namespace, address: str, mac: str | None = None) -> str:
    """Give the LAN end ``address`` (and ``mac``); returns the MAC it has."""
    if mac:
        lan.run(["ip", "link", "set", "dev", lan.interface, "address", mac])
    lan.run(["ip", "addr", "add", f"{address}/24", "dev", lan.interface])
    return lan.run(["cat", f"/sys/class/net/{lan.interface}/address"]).stdout.strip()


def fetch(lan: netns.Namespace, server: TftpServer, address: str, name: str) -> bytes:
    """``<serial>/<name>`` as a Pi at ``address`` on the LAN downloads it."""
    client = PiClient(server.address, SERIAL, bind_ip=address, timeout=3)
    return lan.call(client.get, name)


def exported_to(settings) -> str:
    return open(settings.exports_file).read()


def refusals(fleet) -> list[str]:
    events = fleet.get_pi(SERIAL).events.order_by("id")
    return [event.message for event in events if " not taken: " in event.message]


def test_a_host_that_knows_a_serial_gets_nothing_and_the_pi_keeps_its_exports(
    wire, server, baked, fleet, settings
):
    _, lan = wire
    intruder_mac = take_address(lan, "10.99.0.66")  # the veth's own MAC, not the Pi's
    exports = exported_to(settings)

    with pytest.raises(TftpError) as refused:
        fetch(lan, server, "10.99.0.66", "cmdline.txt")

    assert refused.value.code == 1  # file not found: nothing says the serial exists
    assert Pi.get().last_ip == PI_OLD_IP
    assert exported_to(settings) == exports and "10.99.0.66" not in exports
    assert refusals(fleet) == [
        f"address 10.99.0.66 not taken: it has MAC {intruder_mac}, the Pi has {PI_MAC}"
    ]


def test_the_pi_at_a_new_address_on_its_own_mac_gets_its_root_exported_there(
    wire, server, baked, fleet, settings
):
    _, lan = wire
    take_address(lan, "10.99.0.58", mac=PI_MAC)

    cmdline = fetch(lan, server, "10.99.0.58", "cmdline.txt").decode()

    assert f"nfsroot={SERVER_IP}:{fleet.bake_root(baked.id)},vers=3" in cmdline
    assert Pi.get().last_ip == "10.99.0.58" and refusals(fleet) == []
    assert "10.99.0.58" in exported_to(settings) and PI_OLD_IP not in exported_to(settings)


def test_a_pi_that_never_asked_who_we_are_is_confirmed_on_its_next_try(
    wire, server, baked, fleet, settings
):
    """A bootloader may take our MAC from the DHCP offer and never ARP: its first
    request comes from an address we know nothing of. Our answer makes the kernel
    resolve it, so the bootloader's retry finds it at the Pi's MAC."""
    server_side, lan = wire
    take_address(lan, "10.99.0.58", mac=PI_MAC)
    server_mac = server_side.run(["cat", f"/sys/class/net/{server_side.interface}/address"])
    lan.run(["ip", "neigh", "replace", SERVER_IP, "lladdr", server_mac.stdout.strip(),
             "dev", lan.interface, "nud", "permanent"])  # fmt: skip

    with pytest.raises(TftpError):
        fetch(lan, server, "10.99.0.58", "start4.elf")
    assert refusals(fleet) == [
        f"address 10.99.0.58 not taken: it has no known MAC yet, the Pi has {PI_MAC}"
    ]

    def retry() -> bytes | None:
        try:
            return fetch(lan, server, "10.99.0.58", "start4.elf")
        except TftpError:
            return None

    # The server keeps a Pi's answer for a moment (boots.TARGET_TTL): the retry waits it out.
    assert wait_until(retry, timeout=10, what="the retry to be confirmed")
    assert Pi.get().last_ip == "10.99.0.58"
    assert b"nfsroot=" in fetch(lan, server, "10.99.0.58", "cmdline.txt")
