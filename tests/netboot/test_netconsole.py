"""Bootloader logs: the NETCONSOLE listener in this process on loopback, over a real fleet.
Each datagram's lines are filed under the Pi sending from that address, cleaned, and kept
to the newest few per Pi; a datagram from an address no Pi has is dropped."""

from __future__ import annotations

import dataclasses
import socket

import pytest

from bakery.fleet import console
from bakery.netboot.netconsole import NetconsoleListener, lines_of
from bakery.sim.server import free_udp_port

PI, PI_IP = "00000001", "127.0.0.11"


@pytest.fixture
def listener(settings, fleet):
    bound = dataclasses.replace(settings, netconsole_bind=f"127.0.0.1:{free_udp_port()}")
    running = NetconsoleListener(bound, fleet.boot_source())
    yield running
    running.sock.close()


def send(listener: NetconsoleListener, payload: bytes, source: str) -> None:
    """A datagram from ``source``, then the listener's handling of it."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.sendto(payload, listener.address)
    listener.receive_one()


def logged(fleet, serial: str = PI) -> list[str]:
    return [entry.line for entry in fleet.console(serial)]


def test_a_bootloaders_lines_are_filed_under_the_pi_at_their_address(listener, fleet):
    fleet.register_pi(PI, ip=PI_IP)
    fleet.register_pi("00000002", ip="127.0.0.12")

    send(listener, b"RPi: BOOTLOADER release VERSION:8ba17717\r\nboot: mode NETWORK 2\r\n", PI_IP)

    assert logged(fleet) == ["RPi: BOOTLOADER release VERSION:8ba17717", "boot: mode NETWORK 2"]
    assert logged(fleet, "00000002") == []


def test_a_datagram_from_an_address_no_pi_has_is_dropped(listener, fleet):
    fleet.register_pi(PI, ip=PI_IP)

    send(listener, f"serial {PI}: I am the Pi, honest\r\n".encode(), "127.0.0.99")

    assert logged(fleet) == []
    assert listener.dropped == 1


def test_control_characters_and_blank_lines_never_reach_the_log(listener, fleet):
    fleet.register_pi(PI, ip=PI_IP)

    send(listener, b"\x1b[31mred\x1b[0m\r\n\r\n\x00\x07\r\nok\xff\n", PI_IP)

    assert logged(fleet) == ["[31mred[0m", "ok\xff"]
    assert lines_of(b"\r\n\x00\r\n") == []


def test_the_log_keeps_the_newest_lines_of_each_pi(listener, fleet, monkeypatch):
    monkeypatch.setattr(console, "MAX_LINES_PER_PI", 5)
    fleet.register_pi(PI, ip=PI_IP)

    for number in range(12):
        send(listener, f"line {number}\r\n".encode(), PI_IP)
    send(listener, b"x" * 2000 + b"\r\n", PI_IP)

    assert logged(fleet)[:4] == ["line 8", "line 9", "line 10", "line 11"]
    assert logged(fleet)[4] == "x" * console.MAX_LINE_CHARS
    assert len(logged(fleet)) == 5
