"""Which machine has an address on a network this host is attached to: the kernel's
neighbour (ARP) table.

A Pi's NFS exports follow the address its TFTP requests come from. An address alone is
a claim anyone on the Pi LAN can make; the neighbour table says which MAC actually
answers for it (the kernel learns it from the ARP request a host sends before its first
packet to us, or from our own ARP when we answer), so a Pi whose MAC is registered only
moves to an address its own network card holds, or one whose holder forges ARP with
that MAC (which nothing in this table can tell apart).

Read from ``/proc/thread-self``: a network namespace belongs to a thread, and the
simulator and tests run servers in threads that entered one.
"""

from __future__ import annotations

from pathlib import Path

ARP_TABLE = Path("/proc/thread-self/net/arp")
#: ``ATF_COM``: the entry holds a MAC (not an address still being resolved).
COMPLETE = 0x2


def parse_arp_table(text: str) -> dict[str, str]:
    """``{address: mac}`` of the complete entries of a ``/proc/net/arp`` listing
    (``IP address  HW type  Flags  HW address  Mask  Device``)."""
    entries = {}
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4:
            continue
        try:
            complete = int(fields[2], 16) & COMPLETE
        except ValueError:
            continue
        if complete:
            entries[fields[0]] = fields[3].lower()
    return entries


def mac_of(ip: str, table: Path = ARP_TABLE) -> str | None:
    """The MAC the kernel has for ``ip`` on an attached network, or None (not known yet,
    not on a directly attached network, or not IPv4)."""
    try:
        text = table.read_text()
    except OSError:
        return None
    return parse_arp_table(text).get(ip)
