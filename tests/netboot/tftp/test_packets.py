"""netboot.tftp.packets: the TFTP codec and option negotiation, without a network."""

from __future__ import annotations

import pytest

from bakery.netboot.tftp import packets as tp


def test_rrq_round_trips_with_options_lower_cased():
    packet = tp.encode_request("1234abcd/start4.elf", {"TSIZE": 0, "blksize": 1468})
    request = tp.parse_request(packet)
    assert request.opcode == tp.Opcode.RRQ
    assert request.filename == "1234abcd/start4.elf"
    assert request.mode == "octet"
    assert request.options == {"tsize": "0", "blksize": "1468"}


@pytest.mark.parametrize(
    "packet", [b"\0\x01", b"\0\x03abc\0octet\0", b"\0\x01name\0octet", b"\0\x01n\0octet\0tsize\0"]
)
def test_malformed_requests_are_packet_errors(packet):
    with pytest.raises(tp.PacketError):
        tp.parse_request(packet)


def test_negotiation_grants_tsize_and_clamps_blksize():
    granted = tp.negotiate({"tsize": "0", "blksize": "65464", "windowsize": "4"}, 1234, 1468)
    assert granted == {"tsize": 1234, "blksize": 1468}


def test_negotiation_leaves_out_a_blksize_below_the_rfc_minimum():
    assert tp.negotiate({"blksize": "4"}, 10, 1468) == {}


def test_a_file_filling_its_last_block_ends_with_an_empty_block():
    assert tp.block_count(1024, 512) == 3
    assert tp.block_count(1000, 512) == 2
    assert tp.block_count(0, 512) == 1
