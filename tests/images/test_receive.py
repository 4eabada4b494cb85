"""images.receive: compression from magic bytes, the sparse scratch copy, and the upload limit
held however the bytes arrive."""

from __future__ import annotations

import gzip
import lzma

import pytest

from bakery.images import UploadTooLarge
from bakery.images.receive import SparseWriter, detect_compression
from bakery.sim.image import (
    MIB,
)
from tests.images.support import (
    assert_only_empty_root,
    compressed,
    import_file,
    mbr,
    root_and_tools,
    written,
)


def test_compression_is_detected_from_magic_bytes():
    assert detect_compression(b"\xfd7zXZ\x00\x00") == "xz"
    assert detect_compression(gzip.compress(b"x")) == "gz"
    assert detect_compression(mbr((0x0C, 2048, 1))) == "none"


def test_scratch_copy_keeps_every_byte_and_leaves_holes_where_the_upload_is_zeros(tmp_path):
    block = SparseWriter.BLOCK
    data = b"\x01" * 100 + bytes(6 * block) + b"\x02" * block + bytes(block + 512) + b"\x03"
    scratch = tmp_path / "scratch.img"
    with scratch.open("wb") as out:
        writer = SparseWriter(out)
        for start in range(0, len(data), 2 * block + 7):  # chunks across block boundaries
            writer.write(data[start : start + 2 * block + 7])
        writer.close()
    assert scratch.read_bytes() == data
    assert scratch.stat().st_blocks * 512 <= len(data) - 4 * block


def test_upload_over_the_limit_is_too_large_and_leaves_nothing_behind(image, staging):
    with pytest.raises(UploadTooLarge) as caught:
        import_file(image, staging, max_bytes=10 * MIB)
    assert caught.value.code == "too_large"
    assert_only_empty_root(staging)


def test_compressed_upload_over_the_limit_kills_the_decompressor(image, staging):
    with pytest.raises(UploadTooLarge):
        import_file(compressed(image, "gzip", ".gz"), staging, max_bytes=4096)
    assert_only_empty_root(staging)


@pytest.mark.parametrize("compress", [gzip.compress, lzma.compress], ids=["gz", "xz"])
def test_decompression_bomb_stops_at_the_limit_and_leaves_nothing_behind(
    staging, tmp_path, compress
):
    bomb = written(tmp_path, compress(bytes(50 * MIB)))
    assert bomb.stat().st_size < MIB
    with pytest.raises(UploadTooLarge, match="decompresses to more than the limit of 10485760"):
        import_file(bomb, staging, max_bytes=10 * MIB)
    assert_only_empty_root(staging)


@root_and_tools
def test_image_exactly_at_the_limit_decompresses(image, staging):
    result = import_file(compressed(image, "xz", ".xz"), staging, max_bytes=image.stat().st_size)
    assert result.image_size == image.stat().st_size
