"""Bootloader logs: the lines a Pi 4 or Pi 5 bootloader sends over UDP when its EEPROM
sets NETCONSOLE, filed under the Pi that sent them and kept to the newest few thousand.

The bootloader sends from the source address its NETCONSOLE line names (it logs before
DHCP), so the Pi is known by that address: the one it boots from. A line from an address
no Pi has is dropped, and so is one from a Pi's address that the kernel's neighbour table
has at another MAC than the Pi's: a host on the Pi LAN cannot write into a Pi's log by
naming its serial, nor by taking its address while the Pi is on the wire."""

from __future__ import annotations

import ipaddress

from .. import identifiers, neighbours
from ..models import ConsoleLine, Pi, database
from .context import FleetContext

#: Lines kept per Pi (the newest): several boots' worth; a bootloader says ~100 a boot.
MAX_LINES_PER_PI = 2000
#: Characters kept of one line: a bootloader's lines are short, a flood's need not be.
MAX_LINE_CHARS = 500


def record_lines(ctx: FleetContext, ip: str, lines: list[str]) -> bool:
    """File ``lines`` under the Pi sending from ``ip``; False (nothing filed) when no Pi
    may be sending from there."""
    pi = sender(ctx, identifiers.ip(ip))
    if pi is None:
        return False
    rows = [{"pi": pi.id, "line": line[:MAX_LINE_CHARS]} for line in lines if line.strip()]
    with database.atomic():
        if rows:
            ConsoleLine.insert_many(rows).execute()
        _keep_newest(pi)
    return True


def sender(ctx: FleetContext, ip: str) -> Pi | None:
    """The Pi at ``ip``, unless the neighbour table has ``ip`` at another MAC than the
    Pi's (loopback addresses, the simulator's, are taken on trust when the settings say)."""
    pi = Pi.get_or_none(Pi.last_ip == ip)
    if pi is None or pi.mac is None:
        return pi
    if ctx.settings.trust_loopback and ipaddress.ip_address(ip).is_loopback:
        return pi
    seen = neighbours.mac_of(ip)
    return pi if seen in (None, pi.mac) else None


def _keep_newest(pi: Pi) -> None:
    cutoff = (
        ConsoleLine.select(ConsoleLine.id)
        .where(ConsoleLine.pi == pi.id)
        .order_by(ConsoleLine.id.desc())
        .offset(MAX_LINES_PER_PI)
        .limit(1)
        .scalar()
    )
    if cutoff is not None:
        ConsoleLine.delete().where(ConsoleLine.pi == pi.id, ConsoleLine.id <= cutoff).execute()


def console_of(pi: Pi, limit: int = 200) -> list[ConsoleLine]:
    """The Pi's newest ``limit`` bootloader log lines, oldest first."""
    newest = ConsoleLine.select().where(ConsoleLine.pi == pi.id).order_by(ConsoleLine.id.desc())
    return list(reversed(list(newest.limit(limit))))
