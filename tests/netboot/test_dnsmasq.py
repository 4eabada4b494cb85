"""Proxy DHCP for Pis: the dnsmasq configuration we render, and a real dnsmasq run by
the supervisor answering a Pi-shaped DISCOVER across a veth pair between two network
namespaces (pi-netboot §5.4)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal

import pytest
from click.testing import CliRunner

from bakery import models
from bakery.cli import main
from bakery.config import load_settings
from bakery.fleet import Fleet
from bakery.netboot.dnsmasq import (
    DnsmasqSupervisor,
    parse_dhcp_line,
    parse_model_line,
    render_config,
)
from bakery.sim import dhcp_client
from bakery.sim.dhcp_client import PiIdentity
from bakery.sim.wait import wait_until
from tests.netboot.conftest import SERVER_IP
from tests.support.metrics import scrape

PI4 = PiIdentity("4", "dc:a6:32:01:02:03", serial="bd989ae1")
PI3B = PiIdentity("3b", "b8:27:eb:85:c0:f2", serial="7285c0f2")
PI5 = PiIdentity("5", "2c:cf:67:0d:0e:0f", serial="0c8f7e5c", revision=0xD04170)
NOT_A_PI = PiIdentity("4", "00:1b:21:0a:0b:0c")
#: How long a client listens before concluding nobody will answer.
SILENCE = 3.0


@pytest.fixture
def netboot_settings(tmp_path):
    return load_settings(
        environ={},
        root=tmp_path / "data",
        nfs_server=SERVER_IP,
        pi_interface="eth1",
        proxy_range="10.99.0.0",
    )


def lines(text: str) -> list[str]:
    return text.splitlines()


# -- the configuration ----------------------------------------------------------------


def test_config_answers_only_dhcp_as_a_proxy_on_the_pi_interface(netboot_settings):
    config = lines(render_config(netboot_settings))

    assert "port=0" in config
    assert "interface=eth1" in config
    assert "bind-dynamic" in config
    assert "dhcp-range=10.99.0.0,proxy" in config
    assert "leasefile-ro" in config
    assert "log-dhcp" in config
    assert not any(line.startswith(("enable-tftp", "dhcp-boot")) for line in config)


def test_config_offers_raspberry_pi_boot_to_pi_ouis_and_ignores_other_macs(netboot_settings):
    settings = dataclasses.replace(netboot_settings, pi_ouis=["dc:a6:32", "2c:cf:67"])

    config = lines(render_config(settings))

    assert [line for line in config if line.startswith("dhcp-mac=")] == [
        "dhcp-mac=set:rpi,dc:a6:32:*:*:*",
        "dhcp-mac=set:rpi,2c:cf:67:*:*:*",
    ]
    assert "dhcp-ignore=tag:!rpi" in config
    assert 'pxe-service=tag:rpi,0,"Raspberry Pi Boot"' in config


def test_pi3b_padding_adds_the_three_spaces_the_pi3b_rom_needs(netboot_settings):
    config = lines(render_config(dataclasses.replace(netboot_settings, pi3b_padding=True)))

    assert 'pxe-service=tag:rpi,0,"Raspberry Pi Boot   "' in config


def test_reply_delay_is_rendered_for_pis_only_when_set(netboot_settings):
    assert not any("dhcp-reply-delay" in line for line in lines(render_config(netboot_settings)))

    delayed = dataclasses.replace(netboot_settings, dhcp_reply_delay=2)

    assert "dhcp-reply-delay=tag:rpi,2" in lines(render_config(delayed))


def test_without_proxy_range_the_tftp_servers_subnet_is_served(netboot_settings):
    settings = dataclasses.replace(netboot_settings, proxy_range="")

    config = lines(render_config(settings, tftp_address=("10.7.0.5", 69)))

    assert "dhcp-range=10.7.0.5,proxy" in config


def test_tftp_on_every_address_needs_a_proxy_range(netboot_settings):
    settings = dataclasses.replace(netboot_settings, proxy_range="")

    with pytest.raises(ValueError, match="proxy_range"):
        render_config(settings, tftp_address=("0.0.0.0", 69))


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("pi_interface", "eth0; rm"),
        ("pi_interface", "eth0\nenable-tftp"),
        ("pi_interface", ""),
        ("pi_interface", "-eth0"),
        ("pi_ouis", ["zz:zz:zz"]),
        ("pi_ouis", ["dc:a6:32\ndhcp-boot=evil"]),
        ("pi_ouis", []),
        ("proxy_range", "10.0.0.0/8 #"),
        ("proxy_range", "10.0.0.0\ndhcp-boot=evil"),
        ("proxy_range", "fd00::1"),
        ("dhcp_reply_delay", -1),
        ("dhcp_reply_delay", "1\nenable-tftp"),
    ],
)
def test_hostile_or_malformed_settings_are_refused_naming_the_setting(
    netboot_settings, setting, value
):
    settings = dataclasses.replace(netboot_settings, **{setting: value})

    with pytest.raises(ValueError, match=setting):
        render_config(settings)


def test_dnsmasq_config_command_prints_or_writes_the_configuration(netboot_settings, tmp_path):
    config_file = tmp_path / "bakery.json"
    config_file.write_text(
        json.dumps({"pi_interface": "eth1", "proxy_range": "10.99.0.0", "root": str(tmp_path)})
    )
    runner = CliRunner()

    printed = runner.invoke(main, ["dnsmasq-config", "--config", str(config_file)])
    written = runner.invoke(
        main, ["dnsmasq-config", "--config", str(config_file), "--output", str(tmp_path / "d")]
    )

    assert printed.exit_code == 0, printed.output
    assert "interface=eth1" in lines(printed.output)
    assert written.exit_code == 0, written.output
    assert (tmp_path / "d").read_text() == printed.output


def test_dnsmasq_config_command_names_a_missing_setting(tmp_path):
    config_file = tmp_path / "bakery.json"
    config_file.write_text(json.dumps({"proxy_range": "10.99.0.0", "root": str(tmp_path)}))

    result = CliRunner().invoke(main, ["dnsmasq-config", "--config", str(config_file)])

    assert result.exit_code == 1
    assert "pi_interface" in result.output


# -- reading dnsmasq's log ---------------------------------------------------------------


def test_a_proxy_offer_log_line_names_the_pi_and_the_transaction():
    entry = parse_dhcp_line("dnsmasq-dhcp[812]: 653460281 PXE(eth1) b8:27:eb:85:c0:f2 proxy\n")

    assert entry is not None
    assert entry.mac == "b8:27:eb:85:c0:f2"
    assert entry.message == "PXE(eth1) b8:27:eb:85:c0:f2 proxy"
    assert entry.data == {"packet": "PXE", "interface": "eth1", "xid": 653460281}


def test_a_dhcp_log_line_with_an_address_keeps_the_address():
    entry = parse_dhcp_line("dnsmasq-dhcp[9]: DHCPOFFER(eth1) 10.0.0.9 dc:a6:32:01:02:03")

    assert entry is not None
    assert entry.address == "10.0.0.9"
    assert entry.data == {"packet": "DHCPOFFER", "interface": "eth1", "address": "10.0.0.9"}


@pytest.mark.parametrize(
    ("line", "offer"),
    [
        ("dnsmasq-dhcp[812]: 653460281 PXE(eth1) b8:27:eb:85:c0:f2 proxy", True),
        ("dnsmasq-dhcp[9]: DHCPOFFER(eth1) 10.0.0.9 dc:a6:32:01:02:03", True),
        ("dnsmasq-dhcp[812]: 653460281 PXE(eth1) b8:27:eb:85:c0:f2 proxy-ignored", False),
        ("dnsmasq-dhcp[9]: DHCPDISCOVER(eth1) dc:a6:32:01:02:03", False),
        ("dnsmasq-dhcp[9]: DHCPREQUEST(eth1) 10.0.0.9 dc:a6:32:01:02:03", False),
    ],
    ids=["proxy", "dhcpoffer", "proxy-ignored", "discover", "request"],
)
def test_an_offer_is_told_from_the_other_dhcp_lines(line, offer):
    entry = parse_dhcp_line(line)

    assert entry is not None and entry.is_offer is offer


@pytest.mark.parametrize(
    ("line", "seen"),
    [
        ("dnsmasq-dhcp[7]: 2346026701 tags: pi4, rpi, eth1", (2346026701, "4B")),
        ("dnsmasq-dhcp[7]: 19 tags: rpi, pi5, eth1\n", (19, "5")),
        ("dnsmasq-dhcp[7]: 653460281 tags: rpi, eth1", None),
        ("dnsmasq-dhcp[7]: 653460281 tags: pi4, pi5, rpi", None),
        ("dnsmasq-dhcp[7]: 653460281 PXE(eth1) b8:27:eb:85:c0:f2 proxy", None),
    ],
    ids=["pi4", "pi5", "no-model", "two-models", "not-a-tags-line"],
)
def test_a_tags_line_names_the_model_of_its_transaction(line, seen):
    assert parse_model_line(line) == seen


def test_each_model_that_names_itself_in_option_97_gets_a_tag(netboot_settings):
    config = lines(render_config(netboot_settings))

    assert "dhcp-match=set:pi4,97,00:52:50:69:34" in config
    assert "dhcp-match=set:pi5,97,00:52:50:69:35" in config


@pytest.mark.parametrize(
    "line",
    [
        "dnsmasq-dhcp[812]: 653460281 available DHCP subnet: 10.99.0.0/255.255.255.0",
        "dnsmasq-dhcp[812]: 653460281 vendor class: PXEClient:Arch:00000:UNDI:002001",
        "dnsmasq-dhcp[812]: 653460281 sent size:  4 option: 54 server-identifier  10.99.0.1",
        "dnsmasq[812]: started, version 2.90 DNS disabled",
    ],
)
def test_log_lines_about_no_single_client_are_not_events(line):
    assert parse_dhcp_line(line) is None


# -- a real dnsmasq, supervised, on a private wire ---------------------------------------

needs_netns = pytest.mark.tools("ip", "dnsmasq")


@pytest.fixture
def pi_socket(wire):
    _, pi_side = wire
    sock = pi_side.call(dhcp_client.client_socket, pi_side.interface)
    yield sock
    sock.close()


@pytest.fixture
def supervised(wire, netboot_settings):
    """Start a supervised dnsmasq in the server namespace; always stopped."""
    server_side, _ = wire
    started: list[DnsmasqSupervisor] = []

    def start(tftp_address=None, **overrides) -> DnsmasqSupervisor:
        # Events go to whatever database the test bound (the ``fleet`` fixture's).
        settings = dataclasses.replace(
            netboot_settings, pi_interface=server_side.interface, **overrides
        )
        supervisor = DnsmasqSupervisor(
            settings, Fleet(settings).boot_source(), tftp_address=tftp_address
        )
        started.append(supervisor)
        server_side.call(supervisor.start)
        wait_until(lambda: supervisor.pid, timeout=10, what="dnsmasq to start")
        return supervisor

    yield start
    for supervisor in started:
        supervisor.stop()


@pytest.mark.root
@needs_netns
@pytest.mark.parametrize(
    ("pi", "padding", "menu"),
    [
        (PI4, False, "Raspberry Pi Boot"),
        (PI3B, True, "Raspberry Pi Boot   "),
    ],
)
def test_a_pi_discover_gets_a_proxy_offer_naming_raspberry_pi_boot_and_the_tftp_server(
    supervised, pi_socket, pi, padding, menu
):
    supervised(tftp_address=(SERVER_IP, 69), pi3b_padding=padding)

    offers = dhcp_client.offers(pi_socket, pi, timeout=5)

    assert len(offers) == 1
    offer = offers[0]
    assert offer.boot_menu == [menu]
    assert offer.server_id == SERVER_IP
    assert offer.options[dhcp_client.OPTION_VENDOR_CLASS] == b"PXEClient"
    assert offer.yiaddr == "0.0.0.0", "a proxy offer hands out no address"
    assert offer.flags & dhcp_client.BROADCAST_FLAG
    assert offer.options[dhcp_client.OPTION_CLIENT_GUID] == pi.guid


@pytest.mark.root
@needs_netns
def test_a_client_without_a_pi_mac_gets_no_offer(supervised, pi_socket):
    supervised()
    assert dhcp_client.offers(pi_socket, PI4, timeout=5), "dnsmasq answers Pis"

    assert dhcp_client.offers(pi_socket, NOT_A_PI, timeout=SILENCE) == []


@pytest.mark.root
@needs_netns
def test_a_killed_dnsmasq_is_restarted_and_answers_again(supervised, pi_socket):
    supervisor = supervised()
    first = supervisor.pid

    os.kill(first, signal.SIGKILL)

    wait_until(
        lambda: supervisor.pid not in (None, first), timeout=15, what="a new dnsmasq process"
    )
    assert dhcp_client.offers(pi_socket, PI4, timeout=5)


@pytest.mark.root
@needs_netns
def test_stop_ends_dnsmasq(supervised):
    supervisor = supervised()
    pid = supervisor.pid

    supervisor.stop()

    assert supervisor.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.mark.root
@needs_netns
def test_the_running_configuration_is_the_rendered_one_in_the_data_directory(
    supervised, netboot_settings
):
    supervisor = supervised(pi3b_padding=True)

    assert supervisor.config_file == netboot_settings.path("dnsmasq", "dnsmasq.conf")
    assert supervisor.config_file.read_text() == render_config(supervisor.settings)
    assert f"--conf-file={supervisor.config_file}" in supervisor.command


def dhcp_events(pi: models.Pi) -> list[models.Event]:
    return list(models.Event.select().where(models.Event.pi == pi, models.Event.kind == "dhcp"))


@pytest.mark.root
@needs_netns
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_proxy_offer_becomes_a_dhcp_event_on_the_pi_with_that_mac(fleet, supervised, pi_socket):
    pi = fleet.register_pi(PI3B.serial, mac=PI3B.mac, model="3B")
    supervised()

    assert dhcp_client.offers(pi_socket, PI3B, timeout=5)

    events = wait_until(lambda: dhcp_events(pi), timeout=10, what="a dhcp event on the Pi")
    assert events[0].message == f"PXE(bk-srv) {PI3B.mac} proxy"
    assert events[0].data == {
        "mac": PI3B.mac,
        "packet": "PXE",
        "interface": "bk-srv",
        "xid": dhcp_client.PI3_XID,
    }


@pytest.mark.root
@needs_netns
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_every_proxy_offer_is_counted_whoever_it_is_for(fleet, supervised, pi_socket):
    fleet.register_pi(PI4.serial, mac=PI4.mac)  # PI3B is known to no one
    supervised()
    before = scrape().total("bakery_dhcp_offers_total")

    for pi in (PI4, PI3B):
        assert dhcp_client.offers(pi_socket, pi, timeout=5)
    assert not dhcp_client.offers(pi_socket, NOT_A_PI, timeout=SILENCE)

    wait_until(
        lambda: scrape().total("bakery_dhcp_offers_total") - before == 2,
        timeout=10,
        what="two offers counted",
    )


@pytest.mark.root
@needs_netns
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("pi", "model"), [(PI3B, None), (PI4, "4B"), (PI5, "5")], ids=["pi3b", "pi4", "pi5"]
)
def test_the_model_a_bootloader_names_in_option_97_reaches_its_event_and_its_pi(
    fleet, supervised, pi_socket, pi, model
):
    registered = fleet.register_pi(pi.serial, mac=pi.mac)
    supervised()

    assert dhcp_client.offers(pi_socket, pi, timeout=5)

    events = wait_until(lambda: dhcp_events(registered), timeout=10, what="a dhcp event on the Pi")
    assert events[0].data.get("model") == model
    assert models.Pi.get_by_id(registered.id).model == (model or models.UNKNOWN_MODEL)
