"""The layout of an SD card image, checked before any tool touches its bytes: the MBR
partition table, the FAT boot sector and the ext4 superblock. Pure functions over
bytes (but ``read_layout``), so the hostile-input edge cases are tested without files."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from .errors import ImageError

SECTOR = 512
FAT_TYPES = {0x01: "FAT12", 0x04: "FAT16", 0x06: "FAT16", 0x0B: "FAT32", 0x0C: "FAT32 LBA",
             0x0E: "FAT16 LBA"}  # fmt: skip
LINUX_TYPE = 0x83
GPT_PROTECTIVE = 0xEE
EXT_MAGIC = 0xEF53
EXT4_INCOMPAT_EXTENTS = 0x40
EXT4_INCOMPAT_64BIT = 0x80
EXT4_HUGE_FILE_FL = 0x40000
EXT4_INLINE_DATA_FL = 0x10000000


@dataclass(frozen=True)
class Partition:
    """One MBR entry; ``number`` counts from 1 like ``/dev/mmcblk0p<number>``."""

    number: int
    type: int
    start_sector: int
    sectors: int

    @property
    def offset(self) -> int:
        return self.start_sector * SECTOR

    @property
    def end(self) -> int:
        return (self.start_sector + self.sectors) * SECTOR

    def describe(self) -> str:
        return f"partition {self.number} (type 0x{self.type:02x})"


@dataclass(frozen=True)
class Layout:
    """Where the boot and root filesystems of a validated image are."""

    boot: Partition
    root: Partition


def parse_mbr(sector: bytes) -> list[Partition]:
    """The used entries of a classic MBR partition table in ``sector`` (the first 512 bytes).

    Pure, so the hostile-input edge cases are tested without files.
    """
    if len(sector) < SECTOR:
        raise ImageError(
            "not_an_image", f"not a disk image: {len(sector)} bytes, shorter than one sector"
        )
    if sector[510:512] != b"\x55\xaa":
        found = sector[510:512].hex()
        raise ImageError(
            "not_an_image", f"not a disk image: no MBR signature 55aa at byte 510 (found {found})"
        )
    partitions = [_parse_entry(sector, number) for number in range(1, 5)]
    used = [p for p in partitions if p is not None]
    if not used:
        raise ImageError("bad_partition_table", "the MBR partition table has no partitions")
    return used


def _parse_entry(sector: bytes, number: int) -> Partition | None:
    entry = sector[446 + 16 * (number - 1) : 446 + 16 * number]
    status, kind, start, count = entry[0], entry[4], *struct.unpack_from("<II", entry, 8)
    if kind == 0:
        return None
    if kind == GPT_PROTECTIVE:
        raise ImageError(
            "bad_partition_table",
            f"partition {number} is a GPT protective entry (type 0xee): GPT images are not "
            "supported, a Raspberry Pi SD image has an MBR partition table",
        )
    if status not in (0x00, 0x80):
        raise ImageError(
            "bad_partition_table",
            f"partition {number} has an invalid boot flag 0x{status:02x} (expected 0x00 or 0x80)",
        )
    if start == 0 or count == 0:
        raise ImageError(
            "bad_partition_table",
            f"partition {number} (type 0x{kind:02x}) starts at sector {start} with {count} sectors",
        )
    return Partition(number, kind, start, count)


def choose_partitions(partitions: list[Partition], image_size: int) -> Layout:
    """The first FAT partition is the boot partition, the first Linux one the root."""
    boot = next((p for p in partitions if p.type in FAT_TYPES), None)
    if boot is None:
        found = ", ".join(p.describe() for p in partitions)
        raise ImageError(
            "no_fat_boot",
            f"no FAT boot partition (type 0x0b/0x0c/0x0e/0x06) in the partition table: {found}",
        )
    root = next((p for p in partitions if p.type == LINUX_TYPE), None)
    if root is None:
        found = ", ".join(p.describe() for p in partitions)
        raise ImageError(
            "no_ext4_root", f"no Linux root partition (type 0x83) in the partition table: {found}"
        )
    for partition in (boot, root):
        if partition.end > image_size:
            raise ImageError(
                "truncated",
                f"image is truncated: {partition.describe()} ends at byte {partition.end} "
                f"but the image has only {image_size} bytes",
            )
    if boot.offset < root.end and root.offset < boot.end:
        raise ImageError(
            "bad_partition_table",
            f"{boot.describe()} and {root.describe()} overlap",
        )
    return Layout(boot, root)


def check_fat_boot_sector(sector: bytes, partition: Partition) -> None:
    """A FAT volume boot record: jump, signature and sane BIOS parameter block."""
    where = f"{partition.describe()}, the boot partition,"
    if sector[510:512] != b"\x55\xaa" or sector[0] not in (0xEB, 0xE9):
        raise ImageError(
            "no_fat_boot",
            f"{where} has no FAT boot sector (expected a jump instruction and signature 55aa, "
            f"found {sector[0]:02x}... and {sector[510:512].hex()})",
        )
    bytes_per_sector, per_cluster, reserved, fats = struct.unpack_from("<HBHB", sector, 11)
    if bytes_per_sector not in (512, 1024, 2048, 4096):
        raise ImageError(
            "no_fat_boot", f"{where} has an invalid FAT sector size {bytes_per_sector}"
        )
    if per_cluster == 0 or per_cluster & (per_cluster - 1) or reserved == 0 or fats not in (1, 2):
        raise ImageError(
            "no_fat_boot",
            f"{where} has an invalid FAT parameter block (sectors per cluster {per_cluster}, "
            f"reserved sectors {reserved}, FAT copies {fats})",
        )


def check_ext4_superblock(superblock: bytes, partition: Partition) -> None:
    """The ext superblock (1024 bytes at +1024): magic, ext4 extents, fits its partition."""
    where = f"{partition.describe()}, the root partition,"
    (magic,) = struct.unpack_from("<H", superblock, 56)
    if magic != EXT_MAGIC:
        raise ImageError(
            "no_ext4_root",
            f"{where} has no ext2/3/4 filesystem (expected superblock magic 0xef53 at byte "
            f"1080, found 0x{magic:04x})",
        )
    (incompat,) = struct.unpack_from("<I", superblock, 96)
    if not incompat & EXT4_INCOMPAT_EXTENTS:
        raise ImageError(
            "no_ext4_root",
            f"{where} holds ext2/ext3, not ext4 (the 'extents' feature is not set)",
        )
    (log_block,) = struct.unpack_from("<I", superblock, 24)
    if log_block > 6:
        raise ImageError("no_ext4_root", f"{where} has an invalid block size 2^{10 + log_block}")
    fs_bytes = ext4_geometry(superblock).bytes
    if fs_bytes > partition.sectors * SECTOR:
        raise ImageError(
            "no_ext4_root",
            f"{where} holds a filesystem of {fs_bytes} bytes, larger than the partition "
            f"({partition.sectors * SECTOR} bytes)",
        )


@dataclass(frozen=True)
class Geometry:
    """Block size and count of an ext filesystem: block maps are checked against them."""

    block_size: int
    blocks: int

    @property
    def bytes(self) -> int:
        return self.block_size * self.blocks


def ext4_geometry(superblock: bytes) -> Geometry:
    (log_block,) = struct.unpack_from("<I", superblock, 24)
    (incompat,) = struct.unpack_from("<I", superblock, 96)
    blocks = struct.unpack_from("<I", superblock, 4)[0]
    if incompat & EXT4_INCOMPAT_64BIT:
        blocks |= struct.unpack_from("<I", superblock, 0x150)[0] << 32
    return Geometry(1024 << log_block, blocks)


def read_layout(raw: Path) -> Layout:
    """Validate the image file's partition table, FAT and ext4 headers; where to extract."""
    image_size = raw.stat().st_size
    with raw.open("rb") as f:
        layout = choose_partitions(parse_mbr(f.read(SECTOR)), image_size)
        f.seek(layout.boot.offset)
        check_fat_boot_sector(f.read(SECTOR), layout.boot)
        f.seek(layout.root.offset + 1024)
        check_ext4_superblock(f.read(1024), layout.root)
    return layout
