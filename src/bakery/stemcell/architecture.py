"""Which CPU a program is built for, read from its ELF header.

A stemcell puts three kinds of programs together: the image's own, the bosh-agent given on
the command line and the monit compiled for it. They must all run on the same Pi, so the
build reads the architecture of the first two and compiles the third for it.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

ELF_MAGIC = b"\x7fELF"
#: Bytes of an ELF header that say its class, byte order and machine.
HEADER_BYTES = 20


@dataclass(frozen=True)
class Architecture:
    """A Debian architecture and the GNU triplet its compilers are named by."""

    name: str
    triplet: str
    elf_class: int  # 1: 32-bit, 2: 64-bit
    elf_machine: int


ARCHITECTURES = (
    Architecture("amd64", "x86_64-linux-gnu", 2, 0x3E),
    Architecture("arm64", "aarch64-linux-gnu", 2, 0xB7),
    Architecture("armhf", "arm-linux-gnueabihf", 1, 0x28),
)
_MACHINES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "armhf"}


def elf_architecture(header: bytes) -> Architecture | None:
    """The architecture of the little-endian Linux ELF program whose first bytes are
    `header`, or None for anything else (a script, another CPU, a truncated file)."""
    if len(header) < HEADER_BYTES or not header.startswith(ELF_MAGIC) or header[5] != 1:
        return None
    machine = int.from_bytes(header[18:20], "little")
    for architecture in ARCHITECTURES:
        if (architecture.elf_class, architecture.elf_machine) == (header[4], machine):
            return architecture
    return None


def host_architecture() -> Architecture | None:
    """The architecture of the machine this runs on (None for one no Pi shares)."""
    name = _MACHINES.get(platform.machine())
    return next((a for a in ARCHITECTURES if a.name == name), None)
