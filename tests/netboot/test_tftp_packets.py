"""The TFTP codec and the request-path rules, without a network."""

from __future__ import annotations

import pytest

from bakery.netboot.bootfiles import (
    UnsafePath,
    find_boot_file,
    guess_model,
    parse_request_path,
)
from bakery.netboot.tftp import packets as tp
from bakery.netboot.tftp.cache import PacketCache, PacketImage


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


def test_packet_image_blocks_are_data_packets_that_wrap_to_zero():
    content = bytes(range(256)) * 2100
    image = PacketImage(content, 8)
    assert tp.parse_data(bytes(image.packets[1])) == (1, content[:8])
    assert tp.parse_data(bytes(image.packets[0x10000]))[0] == 0
    assert b"".join(bytes(p)[4:] for p in image.packets[1:]) == content
    assert len(image.packets[-1]) == 4  # 537,600 is a multiple of 8: empty last block


def test_packet_cache_evicts_least_recently_used_past_its_limit(tmp_path):
    cache = PacketCache(limit=3000)
    files = []
    for name in ("a", "b", "c"):
        (tmp_path / name).write_bytes(name.encode() * 1000)
        files.append(tmp_path / name)
    first = cache.get(files[0], 512, bytes)
    cache.get(files[1], 512, bytes)
    assert cache.get(files[0], 512, bytes) is first
    cache.get(files[2], 512, bytes)
    assert cache.used <= 3000
    assert cache.get(files[0], 512, bytes) is first  # recently used: kept


@pytest.mark.parametrize(
    ("raw", "serial", "relative"),
    [
        ("1234abcd/start4.elf", "1234abcd", "start4.elf"),
        ("1234ABCD//config.txt", "1234abcd", "config.txt"),
        ("1234abcd/overlays//x.dtbo", "1234abcd", "overlays/x.dtbo"),
        ("bootcode.bin", None, "bootcode.bin"),
    ],
)
def test_request_paths_split_into_serial_and_file(raw, serial, relative):
    path = parse_request_path(raw)
    assert (path.serial, path.relative) == (serial, relative)


@pytest.mark.parametrize(
    "raw",
    [
        "../../etc/passwd",
        "1234abcd/../../etc/passwd",
        "/etc/passwd",
        "1234abcd/overlays/../../x",
        "1234abcd/./config.txt",
        "zzzzzzzz/start4.elf",
        "1234abcd\\..\\x",
        "1234abcd/a\x00b",
        "",
        "//",
    ],
)
def test_unsafe_request_paths_are_refused(raw):
    with pytest.raises(UnsafePath):
        parse_request_path(raw)


def test_boot_files_match_case_insensitively_inside_the_tree(tmp_path):
    (tmp_path / "boot" / "overlays").mkdir(parents=True)
    (tmp_path / "boot" / "overlays" / "vc4-kms-v3d.dtbo").write_bytes(b"x")
    assert find_boot_file(tmp_path / "boot", "OVERLAYS/VC4-KMS-V3D.DTBO") == (
        tmp_path / "boot" / "overlays" / "vc4-kms-v3d.dtbo"
    )
    assert find_boot_file(tmp_path / "boot", "overlays") is None


def test_boot_file_lookup_never_follows_symlinks_out_of_the_tree(tmp_path):
    (tmp_path / "boot").mkdir()
    (tmp_path / "secret").write_text("no")
    (tmp_path / "boot" / "link").symlink_to(tmp_path / "secret")
    (tmp_path / "boot" / "dir").symlink_to(tmp_path)
    assert find_boot_file(tmp_path / "boot", "link") is None
    assert find_boot_file(tmp_path / "boot", "dir/secret") is None
    assert find_boot_file(tmp_path / "boot", "../secret") is None


@pytest.mark.parametrize(
    ("names", "model"),
    [
        (["1234abcd/start4.elf"], "4B"),
        (["bootcode.bin"], "3B"),
        (["1234abcd/start.elf"], "3B"),
        (["1234abcd/config.txt", "1234abcd/kernel_2712.img"], "5"),
        (["1234abcd/config.txt"], None),
    ],
)
def test_model_is_guessed_from_the_files_asked_for(names, model):
    assert guess_model(names) == model
