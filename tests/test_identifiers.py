"""Identifier rules: what may reach a path, an exports line or a command."""

from __future__ import annotations

import pytest

from bakery import identifiers
from bakery.identifiers import InvalidIdentifier


@pytest.mark.parametrize(
    ("given", "normal"), [("1234ABCD", "1234abcd"), ("0x1f", "0000001f"), ("abc", "00000abc")]
)
def test_serials_are_normalised_like_the_bootloader_prints_them(given, normal):
    assert identifiers.serial(given) == normal


@pytest.mark.parametrize("bad", ["", "123456789", "12g45678", "../12345", "1234 5678", "\x00"])
def test_bad_serials_are_refused(bad):
    with pytest.raises(InvalidIdentifier):
        identifiers.serial(bad)


@pytest.mark.parametrize(
    "bad", ["*", "10.0.0.0/8", "host.example", "fe80::1%eth0", "fe80::1%a b", "1.2.3.4 5.6.7.8", ""]
)
def test_only_single_host_addresses_are_accepted(bad):
    with pytest.raises(InvalidIdentifier):
        identifiers.ip(bad)


@pytest.mark.parametrize("bad", ["..", ".x", "a/b", "a b", "x" * 65, "a\nb", "a..b"])
def test_names_cannot_escape_a_directory(bad):
    with pytest.raises(InvalidIdentifier):
        identifiers.name(bad)


@pytest.mark.parametrize("bad", ["0.0.0.0", "::", "224.0.0.1", "ff02::1"])
def test_wildcard_and_multicast_addresses_are_not_a_pi(bad):
    with pytest.raises(InvalidIdentifier):
        identifiers.ip(bad)


def test_an_ipv4_client_on_a_dual_stack_socket_is_its_ipv4_address():
    assert identifiers.ip("::ffff:10.0.0.5") == "10.0.0.5"
