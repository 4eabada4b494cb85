"""What kind of boot file a name is: the one low-cardinality label of the TFTP and HTTP
boot counters. File names come from the Pis (and from anyone on the Pi LAN), so a name
itself can never be a label; its kind is one of ``FILE_KINDS``."""

from __future__ import annotations

#: First match wins: (kind, exact base names, base-name suffixes, base-name prefixes).
#: Names are compared in lower case, by their last path component, except overlays,
#: which are known by their directory too (``overlays/overlay_map.dtb``).
_RULES: tuple[tuple[str, tuple[str, ...], tuple[str, ...], tuple[str, ...]], ...] = (
    ("cmdline", ("cmdline.txt",), (), ()),
    ("boot_image", ("boot.img",), (), ()),
    ("signature", (), (".sig",), ()),
    ("overlay", (), (".dtbo",), ()),
    ("dtb", (), (".dtb",), ()),
    ("config", (), (".txt",), ()),
    ("initramfs", (), (), ("initramfs", "initrd")),
    ("kernel", ("image",), (), ("kernel", "vmlinuz", "zimage")),
    (
        "firmware",
        (),
        (".elf", ".dat"),
        ("bootcode", "armstub", "recovery", "pieeprom", "bootmain"),
    ),
)
FILE_KINDS = (*(rule[0] for rule in _RULES), "other")


def file_kind(name: str) -> str:
    """The kind of the boot file ``name`` (a path as a Pi asks for it, serial prefix or
    not): one of ``FILE_KINDS``."""
    path = name.replace("\\", "/").strip("/").lower()
    directory, _, base = path.rpartition("/")
    if directory.split("/")[-1:] == ["overlays"]:
        return "overlay"
    for kind, names, suffixes, prefixes in _RULES:
        if base in names or base.endswith(suffixes) or base.startswith(prefixes):
            return kind
    return "other"
