"""``bakery netconsole``: receives the bootloader logs Pi 4 and Pi 5 bootloaders send over
UDP when their EEPROM sets ``NETCONSOLE`` (pi-http-boot), and hands each datagram's lines
to the fleet, which files them under the Pi sending from that address.

One socket, one thread: a bootloader sends a few hundred short lines a boot. What is not
text is made text (bytes as latin-1, control characters dropped), so a datagram from
anyone on the Pi LAN can only ever become harmless lines, or nothing.
"""

from __future__ import annotations

import logging
import socket
import time

from ..config import Settings
from .bootfiles import BootSource, SourceFactory

log = logging.getLogger(__name__)

#: Larger than any UDP payload on Ethernet.
DATAGRAM_BYTES = 65535
#: Seconds between two log lines about dropped datagrams.
QUIET_SECONDS = 60.0


def lines_of(datagram: bytes) -> list[str]:
    """The printable lines of a datagram (a bootloader ends its lines with CR LF)."""
    text = datagram.decode("latin-1")
    lines = []
    for raw in text.splitlines():
        line = "".join(c for c in raw if c.isprintable()).strip()
        if line:
            lines.append(line)
    return lines


class NetconsoleListener:
    def __init__(self, settings: Settings, source: BootSource) -> None:
        address = settings.netconsole_address
        if address is None:
            raise ValueError("setting 'netconsole_bind' is empty: bootloader logs are off")
        self.source = source
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        self.sock.bind(address)
        self.dropped = 0
        self._quiet_until = 0.0

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()[:2]
        return host, port

    def serve_forever(self) -> None:
        while True:
            self.receive_one()

    def receive_one(self) -> None:
        """File one datagram's lines, or count it as dropped."""
        datagram, (ip, _port) = self.sock.recvfrom(DATAGRAM_BYTES)
        lines = lines_of(datagram)
        if lines and self.source.record_console(ip, lines):
            return
        self.dropped += 1
        now = time.monotonic()
        if now >= self._quiet_until:
            self._quiet_until = now + QUIET_SECONDS
            log.warning("bootloader log from %s dropped: no Pi sends from there", ip)

    def close(self) -> None:
        self.sock.close()
        self.source.close()


def run_netconsole(settings: Settings, open_source: SourceFactory) -> None:
    """Receive bootloader logs in the foreground until SIGTERM/SIGINT."""
    listener = NetconsoleListener(settings, open_source(settings))
    log.info("bootloader logs received on %s:%d", *listener.address)
    try:
        listener.serve_forever()
    finally:
        listener.close()
