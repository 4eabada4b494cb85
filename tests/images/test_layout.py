"""images.layout: the MBR, FAT and ext4 header checks, on bytes alone."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bakery.images import ImageError
from bakery.images.layout import Partition, choose_partitions, parse_mbr
from bakery.sim.image import (
    MIB,
    SECTOR,
)
from tests.images.support import mbr


def code_of(call: Callable[[], object]) -> str:
    with pytest.raises(ImageError) as caught:
        call()
    return caught.value.code


def test_mbr_of_a_pi_image_lists_fat_boot_and_linux_root():
    partitions = parse_mbr(mbr((0x0C, 2048, 131072), (0x83, 133120, 131072)))
    assert partitions == [Partition(1, 0x0C, 2048, 131072), Partition(2, 0x83, 133120, 131072)]
    layout = choose_partitions(partitions, image_size=(133120 + 131072) * SECTOR)
    assert (layout.boot.number, layout.root.number) == (1, 2)


def test_sector_without_mbr_signature_is_not_an_image():
    with pytest.raises(ImageError, match="no MBR signature 55aa at byte 510") as caught:
        parse_mbr(b"hello world\n" * 100)
    assert caught.value.code == "not_an_image"


def test_input_shorter_than_a_sector_is_not_an_image():
    assert code_of(lambda: parse_mbr(b"\x55\xaa")) == "not_an_image"


def test_gpt_protective_mbr_is_refused_by_name():
    with pytest.raises(ImageError, match="GPT") as caught:
        parse_mbr(mbr((0xEE, 1, 0xFFFFFFFF)))
    assert caught.value.code == "bad_partition_table"


def test_empty_partition_table_is_a_bad_partition_table():
    assert code_of(lambda: parse_mbr(mbr())) == "bad_partition_table"


def test_image_without_fat_partition_says_what_it_found():
    partitions = parse_mbr(mbr((0x83, 2048, 100), (0x83, 4096, 100)))
    with pytest.raises(ImageError, match=r"partition 1 \(type 0x83\)") as caught:
        choose_partitions(partitions, image_size=10 * MIB)
    assert caught.value.code == "no_fat_boot"


def test_image_without_linux_partition_has_no_ext4_root():
    partitions = parse_mbr(mbr((0x0C, 2048, 100), (0x07, 4096, 100)))
    assert code_of(lambda: choose_partitions(partitions, 10 * MIB)) == "no_ext4_root"


def test_partition_beyond_the_end_of_the_image_means_truncated():
    partitions = parse_mbr(mbr((0x0C, 2048, 2048), (0x83, 4096, 4096)))
    with pytest.raises(ImageError, match="partition 2 .* ends at byte 4194304") as caught:
        choose_partitions(partitions, image_size=3 * MIB)
    assert caught.value.code == "truncated"
