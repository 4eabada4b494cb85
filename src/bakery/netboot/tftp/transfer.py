"""One transfer (a read by one client port): its TID socket, its packet image and where
it is; the per-packet hot path."""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING

from . import packets as tp
from .cache import PacketImage

if TYPE_CHECKING:
    from .server import TftpServer

#: Opcodes as plain ints for the per-packet path (an IntEnum lookup costs more).
_ACK, _ERROR = int(tp.Opcode.ACK), int(tp.Opcode.ERROR)


class Transfer:
    """One read: the client's TID socket, the packet image, and where we are.

    ``block`` is the unwrapped number of the packet last sent (0 = the OACK)."""

    __slots__ = (
        "server",
        "client",
        "sock",
        "image",
        "packets",
        "count",
        "name",
        "serial",
        "block",
        "expected",
        "watched_block",
        "stalled_since",
        "retries",
        "started",
        "oack",
    )

    def __init__(self, server: TftpServer, client: tuple[str, int], sock: socket.socket) -> None:
        self.server = server
        self.client = client
        self.sock = sock
        self.image: PacketImage | None = None
        self.packets: list[memoryview] = []
        self.count = 0
        self.name = ""
        self.serial: str | None = None
        self.block = 0
        self.expected = 0
        self.watched_block = -1
        self.stalled_since = 0.0
        self.retries = 0
        self.started = time.monotonic()
        self.oack = b""

    def begin(self, image: PacketImage, oack: bytes) -> None:
        self.image, self.packets, self.count, self.oack = image, image.packets, image.count, oack
        if oack:
            self.send(oack)
        else:
            self.advance()

    def on_readable(self) -> None:
        """The hot path: one ACK in, the next DATA packet out."""
        buf = self.server.recv_buffer
        try:
            length = self.sock.recv_into(buf)
        except BlockingIOError:
            return
        except OSError as exc:  # ICMP port unreachable: the client is gone
            self.server.finish(self, f"client unreachable: {exc.strerror}")
            return
        if length < 4 or buf[0] != 0:
            return
        if buf[1] == _ACK:
            if (buf[2] << 8 | buf[3]) == self.expected:
                self.advance()
            return
        if buf[1] == _ERROR:
            self.server.client_error(self, bytes(buf[:length]))

    def advance(self) -> None:
        if self.block == self.count:
            self.server.finish(self)
            return
        self.block += 1
        self.expected = self.block & 0xFFFF
        self.send(self.packets[self.block])

    def send(self, packet: bytes | memoryview) -> None:
        try:
            self.sock.send(packet)
        except BlockingIOError:
            pass  # the retransmit sweep sends it again
        except OSError as exc:
            self.server.finish(self, f"send failed: {exc.strerror}")

    def check_progress(self, now: float, timeout: float, retries: int) -> None:
        """Called by the sweep: resend when no ACK moved the transfer on for ``timeout``
        seconds, give up after ``retries`` resends. Watching the block number here keeps
        clock reads off the per-packet path."""
        if self.block != self.watched_block:
            self.watched_block, self.stalled_since, self.retries = self.block, now, 0
        elif now - self.stalled_since >= timeout:
            if self.retries >= retries:
                self.server.finish(self, f"no ACK for block {self.block} after {retries} resends")
                return
            self.retries += 1
            self.stalled_since = now
            self.send(self.packets[self.block] if self.block else self.oack)
