"""A TFTP client that behaves like a Raspberry Pi bootloader (pi-netboot §2).

Each RRQ comes from a new source port; most files are first probed (``tsize 0``,
read the OACK, answer ERROR 0 "Early terminate") and then fetched (with
``blksize 1468`` on a Pi 4/5, 512-byte blocks on a Pi 3); every DATA block is ACKed,
duplicates re-ACKed. Raw UDP, no TFTP library, so tests see exactly what a Pi would.

Transfers are small state machines fed datagrams, so one selector loop can drive
many Pis at once (``run``, used by the benchmark) and the blocking helpers
(``PiClient.get``/``probe``/``boot``, and the simulated Pis' bootloader) are the same
code with one.
"""

from __future__ import annotations

import selectors
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from bakery.netboot.tftp import packets as tp

PI4_BLKSIZE = 1468
#: What a Pi 4 asks for, in order, for a Raspberry Pi OS boot partition; each fetch
#: is preceded by a probe, as the bootloader does.
PI4_BOOT_FILES = (
    "start4.elf",
    "config.txt",
    "fixup4.dat",
    "bcm2711-rpi-4-b.dtb",
    "overlays/vc4-kms-v3d.dtbo",
    "cmdline.txt",
    "kernel8.img",
)
EARLY_TERMINATE = tp.encode_error(tp.ErrorCode.UNDEFINED, "Early terminate")


class TftpError(Exception):
    """The server answered with an ERROR packet (or not at all: code None)."""

    def __init__(self, name: str, code: int | None, message: str) -> None:
        super().__init__(f"{name}: TFTP error {code}: {message}")
        self.code, self.message = code, message


@dataclass
class Download:
    """One RRQ, from its own socket, driven by the datagrams it receives."""

    server: tuple[str, int]
    name: str
    options: dict[str, str | int] = field(default_factory=dict)
    #: Abort after the OACK, as the Pi's existence probe does.
    probe: bool = False
    bind_ip: str = "127.0.0.1"
    #: Filled in as the transfer runs.
    oack: dict[str, str] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)
    error: tuple[int, str] | None = None
    done: bool = False
    #: Unwrapped number of the last block received.
    blocks: int = 0

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((self.bind_ip, 0))
        self.sock.setblocking(False)
        self.blksize = tp.DEFAULT_BLKSIZE
        self.last_sent = tp.encode_request(self.name, self.options)
        self.peer = self.server
        self.sent_at = self.heard_at = time.monotonic()

    def start(self) -> None:
        self.heard_at = time.monotonic()
        self._send(self.last_sent)

    def on_readable(self) -> None:
        try:
            # A DATA packet is at most blksize + 4 bytes; asking for no more than that
            # (not 64 KiB) spares an allocation per packet, which made 100 simulated
            # Pis in one process slower than the server they measure.
            packet, peer = self.sock.recvfrom(max(self.blksize, 1024) + 4)
        except BlockingIOError:
            return
        self.peer, self.heard_at = peer, time.monotonic()
        self.feed(packet)

    def feed(self, packet: bytes) -> None:
        opcode = tp.opcode_of(packet)
        if opcode == tp.Opcode.DATA:
            self._on_data(packet)
        elif opcode == tp.Opcode.OACK:
            self._on_oack(packet)
        elif opcode == tp.Opcode.ERROR:
            self.error = tp.parse_error(packet)
            self.done = True

    def _on_oack(self, packet: bytes) -> None:
        self.oack = tp.parse_oack(packet)
        self.blksize = int(self.oack.get("blksize", tp.DEFAULT_BLKSIZE))
        if self.probe:
            self._send(EARLY_TERMINATE)
            self.done = True
            return
        self._send(tp.encode_ack(0))

    def _on_data(self, packet: bytes) -> None:
        block = packet[2] << 8 | packet[3]
        if block != (self.blocks + 1) & 0xFFFF:
            self._send(tp.encode_ack(block))  # a duplicate: re-ACK, as the Pi does
            return
        self.blocks += 1
        self.data += memoryview(packet)[4:]
        self._send(tp.encode_ack(block))
        if len(packet) - 4 < self.blksize:
            self.done = True

    def _send(self, packet: bytes) -> None:
        self.last_sent = packet
        self.sent_at = time.monotonic()
        self.sock.sendto(packet, self.peer)

    def resend(self) -> None:
        self._send(self.last_sent)

    def close(self) -> None:
        self.sock.close()

    def result(self) -> bytes:
        if self.error is not None:
            raise TftpError(self.name, *self.error)
        if not self.done:
            raise TftpError(self.name, None, "no answer")
        return bytes(self.data)


def pi4_sequence(
    server: tuple[str, int],
    serial: str,
    files: Iterable[str] = PI4_BOOT_FILES,
    bind_ip: str = "127.0.0.1",
    blksize: int = PI4_BLKSIZE,
) -> Iterator[Download]:
    """A Pi 4's boot: for each file a tsize probe then the download (with blksize),
    each from a new port. Yields each transfer, runs it, and carries on."""
    for name in files:
        path = f"{serial}/{name}"
        yield Download(server, path, {"tsize": 0}, probe=True, bind_ip=bind_ip)
        yield Download(server, path, {"tsize": 0, "blksize": blksize}, bind_ip=bind_ip)


def run(
    pis: Iterable[Iterator[Download]],
    timeout: float = 10.0,
    retransmit: float = 1.0,
    cancelled: Callable[[], bool] | None = None,
) -> list[list[Download]]:
    """Drive several Pis at once, each through its own transfers one after another.
    Returns every Pi's finished transfers; a transfer with no answer within
    ``timeout`` ends the Pi's sequence (its Download stays not ``done``). When
    ``cancelled()`` turns true (a simulated Pi losing power) every transfer stops
    where it is, within a quarter of ``retransmit``."""
    selector = selectors.DefaultSelector()
    sequences = list(pis)
    finished: list[list[Download]] = [[] for _ in sequences]
    for index in range(len(sequences)):
        _next(selector, sequences, finished, index)
    check_every = retransmit / 4
    next_check = time.monotonic() + check_every
    try:
        while selector.get_map() and not (cancelled and cancelled()):
            for key, _ in selector.select(check_every):
                download, index = key.data
                download.on_readable()
                if download.done:
                    _next(selector, sequences, finished, index)
            if time.monotonic() >= next_check:
                _expire(selector, sequences, finished, timeout, retransmit)
                next_check = time.monotonic() + check_every
    finally:
        for key in list(selector.get_map().values()):
            key.data[0].close()
        selector.close()
    return finished


def _next(
    selector: selectors.BaseSelector,
    sequences: list[Iterator[Download]],
    finished: list[list[Download]],
    index: int,
) -> None:
    """Close the Pi's current transfer (if any) and start its next one."""
    if finished[index]:
        current = finished[index][-1]
        if current.sock.fileno() >= 0:
            selector.unregister(current.sock)
            current.close()
        if not current.done:
            return
    download = next(sequences[index], None)
    if download is None:
        return
    finished[index].append(download)
    selector.register(download.sock, selectors.EVENT_READ, (download, index))
    download.start()


def _expire(
    selector: selectors.BaseSelector,
    sequences: list[Iterator[Download]],
    finished: list[list[Download]],
    timeout: float,
    retransmit: float,
) -> None:
    """Resend what went unanswered for ``retransmit`` s (the Pi resends its RRQ every
    ~2 s); give a transfer up after ``timeout`` s without hearing from the server."""
    now = time.monotonic()
    for key in list(selector.get_map().values()):
        download, index = key.data
        if now - download.heard_at >= timeout:
            _next(selector, sequences, finished, index)
        elif now - download.sent_at >= retransmit:
            download.resend()


class PiClient:
    """Blocking helpers for one Pi: what tests and the simulated Pi call."""

    def __init__(
        self, server: tuple[str, int], serial: str, bind_ip: str = "127.0.0.1", timeout: float = 5.0
    ) -> None:
        self.server, self.serial, self.bind_ip, self.timeout = server, serial, bind_ip, timeout

    def download(
        self, name: str, options: Mapping[str, str | int] | None = None, probe: bool = False
    ) -> Download:
        """One finished transfer of ``name`` (a path as sent: add the serial yourself)."""
        download = Download(self.server, name, dict(options or {}), probe, self.bind_ip)
        run([iter([download])], timeout=self.timeout)
        return download

    def probe(self, name: str) -> dict[str, str]:
        """The Pi's existence check: the OACK for ``tsize 0``, then Early terminate."""
        download = self.download(f"{self.serial}/{name}", {"tsize": 0}, probe=True)
        download.result()
        return download.oack

    def get(self, name: str, blksize: int = PI4_BLKSIZE) -> bytes:
        """``<serial>/<name>`` as the Pi downloads it."""
        options = {"tsize": 0, "blksize": blksize}
        return self.download(f"{self.serial}/{name}", options).result()

    def boot(self, files: Iterable[str] = PI4_BOOT_FILES) -> dict[str, bytes]:
        """A whole Pi 4 boot: probe and fetch each file; raises on the first error."""
        (downloads,) = run([pi4_sequence(self.server, self.serial, files, self.bind_ip)])
        fetched = {}
        for download in downloads:
            content = download.result()
            if not download.probe:
                fetched[download.name.split("/", 1)[1]] = content
        return fetched
