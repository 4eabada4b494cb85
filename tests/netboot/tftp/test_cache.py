"""netboot.tftp.cache: files as ready-made DATA packets, cached least recently used first out."""

from __future__ import annotations

from bakery.netboot.tftp import packets as tp
from bakery.netboot.tftp.cache import PacketCache, PacketImage


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
