"""A boot file's kind, the one label of the TFTP and HTTP boot counters: from its name,
serial prefix or not, whatever its case, and never the name itself."""

from __future__ import annotations

import pytest

from bakery.metrics import FILE_KINDS, file_kind


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("bootcode.bin", "firmware"),
        ("1234abcd/start4.elf", "firmware"),
        ("1234abcd/fixup4.dat", "firmware"),
        ("1234abcd/start.elf", "firmware"),
        ("1234abcd/armstub8-2712.bin", "firmware"),
        ("1234abcd/recovery.bin", "firmware"),
        ("1234abcd/pieeprom.upd", "firmware"),
        ("1234abcd/pieeprom.sig", "signature"),
        ("1234abcd/kernel8.img", "kernel"),
        ("1234abcd/kernel_2712.img", "kernel"),
        ("1234abcd/vmlinuz-6.1.0-rpi7-rpi-v8", "kernel"),
        ("1234abcd/Image", "kernel"),
        ("1234abcd/initramfs8", "initramfs"),
        ("1234abcd/initrd.img-6.1.0", "initramfs"),
        ("1234abcd/config.txt", "config"),
        ("1234abcd//config.txt", "config"),
        ("1234abcd/CONFIG.TXT", "config"),
        ("1234abcd/cmdline.txt", "cmdline"),
        ("1234abcd/bcm2711-rpi-4-b.dtb", "dtb"),
        ("1234abcd/overlays/vc4-kms-v3d.dtbo", "overlay"),
        ("1234abcd/overlays/overlay_map.dtb", "overlay"),
        ("1234abcd/boot.img", "boot_image"),
        ("boot.sig", "signature"),
        ("1234abcd/../../etc/shadow", "other"),
        ("", "other"),
    ],
)
def test_a_boot_files_kind_comes_from_its_name(name, kind):
    assert file_kind(name) == kind


def test_every_kind_is_one_of_the_few_kinds():
    names = ["x" * 300, "a/b/c/d.e", "\x00\xff", "kernel", "overlays/", "1234abcd/start4.elf"]
    assert {file_kind(name) for name in names} <= set(FILE_KINDS)
    assert len(FILE_KINDS) == len(set(FILE_KINDS)) <= 12
