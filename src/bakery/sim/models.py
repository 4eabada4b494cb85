"""A simulated Pi: the board's identity, and what its last power-on went through.

The boot states mirror what an operator sees on a real board: ``off``; ``dhcp``,
``tftp`` and ``nfs`` while the bootloader and kernel work; ``booted`` once the root
filesystem was read; ``failed`` (with a reason) where a real Pi would sit on its
rainbow screen or loop in its bootloader, still powered.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .. import identifiers
from .http_boot import HttpBootSettings

BOOT_STATES = ("off", "dhcp", "tftp", "http", "nfs", "booted", "failed")
#: The models whose bootloader lives in an EEPROM: they can boot over HTTP (boot mode 7)
#: and send their log over UDP (NETCONSOLE).
EEPROM_MODELS = ("4B", "5")
#: Bakery's model names for the boards the simulator knows the bootloader of.
MODELS = ("3B", "3B+", "4B", "5")
#: Each model's MAC prefix (pi-netboot §4): Raspberry Pi Foundation, then Trading.
MODEL_OUIS = {"3B": "b8:27:eb", "3B+": "b8:27:eb", "4B": "dc:a6:32", "5": "2c:cf:67"}


@dataclass(frozen=True)
class TimelineEntry:
    """One step of a boot, as the simulator's status shows it."""

    at: float
    step: str
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at, "step": self.step, "detail": self.detail}


@dataclass
class SimPi:
    """One simulated board. ``state`` is a boot state; ``powered`` is the relay."""

    serial: str
    mac: str
    model: str
    address: str
    powered: bool = False
    state: str = "off"
    reason: str = ""
    #: ``/etc/hostname`` as read from the NFS root at the end of the last boot.
    hostname: str = ""
    #: Wall-clock times of every power-on (to check the fleet's power-on spacing).
    power_ons: list[float] = field(default_factory=list)
    timeline: list[TimelineEntry] = field(default_factory=list)
    #: TFTP payload bytes received, over every boot.
    tftp_bytes: int = 0
    #: The EEPROM's HTTP boot settings; None: it boots over TFTP.
    http_boot: HttpBootSettings | None = None
    #: boot.img and boot.sig bytes received over HTTP, over every boot.
    http_bytes: int = 0
    #: Where the EEPROM's NETCONSOLE sends the bootloader's log (ip, port); None: nowhere.
    netconsole: tuple[str, int] | None = None
    #: Bumped by each power change, so a boot cut short cannot write over a newer one.
    generation: int = 0

    def __post_init__(self) -> None:
        self.serial = identifiers.serial(self.serial)
        self.mac = identifiers.mac(self.mac)
        self.address = identifiers.ip(self.address)
        if self.model not in MODELS:
            raise ValueError(f"model {self.model!r} is not one of {', '.join(MODELS)}")
        if self.http_boot is not None and self.model not in EEPROM_MODELS:
            raise ValueError(f"a Pi {self.model} bootloader cannot boot over HTTP")

    def note(self, step: str, detail: str) -> None:
        self.timeline.append(TimelineEntry(time.time(), step, detail))

    def status(self) -> dict[str, Any]:
        """What the power API answers: ``state`` is the relay (``on``/``off``, the
        words Bakery's webhook driver reads), ``boot`` how far the boot got."""
        return {
            "serial": self.serial,
            "model": self.model,
            "mac": self.mac,
            "address": self.address,
            "state": "on" if self.powered else "off",
            "boot": self.state,
            "reason": self.reason,
            "hostname": self.hostname,
            "power_ons": len(self.power_ons),
            "tftp_bytes": self.tftp_bytes,
            "boot_protocol": "tftp" if self.http_boot is None else "http",
            "http_bytes": self.http_bytes,
        }


def make_pis(count: int, models: list[str], addresses: list[str], first: int) -> list[SimPi]:
    """``count`` boards with serials counting up from ``first``, models taken in turn
    from ``models`` and one address each; MACs carry the model's OUI."""
    pis = []
    for index in range(count):
        model = models[index % len(models)]
        number = first + index
        suffix = ":".join(f"{byte:02x}" for byte in number.to_bytes(4, "big")[1:])
        pis.append(
            SimPi(
                serial=f"{number:08x}",
                mac=f"{MODEL_OUIS[model]}:{suffix}",
                model=model,
                address=addresses[index],
            )
        )
    return pis
