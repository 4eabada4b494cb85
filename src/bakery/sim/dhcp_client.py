"""A DHCP client that speaks like a Raspberry Pi bootloader (pi-netboot §1.1).

It builds the DISCOVER byte for byte with ``struct`` (options 53, 55, 60, 93, 94 and
97 as each model sends them), broadcasts it from port 68, and parses what comes
back, including the PXE sub-options inside option 43 that carry the
"Raspberry Pi Boot" menu entry a Pi looks for. The netboot tests use it to ask a
real dnsmasq for a proxy offer; a simulated Pi uses it for its DHCP step.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

CLIENT_PORT = 68
SERVER_PORT = 67
MAGIC_COOKIE = b"\x63\x82\x53\x63"
#: op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr, sname, file
BOOTP = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")
BOOTREQUEST, BOOTREPLY = 1, 2
BROADCAST_FLAG = 0x8000

DISCOVER, OFFER = 1, 2
OPTION_PAD, OPTION_END = 0, 255
OPTION_VENDOR_SPECIFIC = 43
OPTION_MESSAGE_TYPE = 53
OPTION_SERVER_ID = 54
OPTION_PARAMETER_REQUEST = 55
OPTION_VENDOR_CLASS = 60
OPTION_CLIENT_ARCH = 93
OPTION_CLIENT_NDI = 94
OPTION_CLIENT_GUID = 97

#: Option 60 of every Pi bootloader; x86 PXE ROMs send much the same (§1.1).
PI_VENDOR_CLASS = b"PXEClient:Arch:00000:UNDI:002001"
#: The transaction id every Pi 3 boot ROM uses (firmware #1067).
PI3_XID = 0x26F30339
#: Seconds without another packet after which the offers are taken to be complete.
QUIET = 0.3
#: PXE vendor sub-option 9 holds the boot menu (type, length, text).
PXE_BOOT_MENU = 9

PI3B_REQUESTS = bytes([43, 60, 67, *range(128, 136), 66])
PI3BPLUS_REQUESTS = bytes([1, 3, *PI3B_REQUESTS])
#: FourCC in option 97 of Pi 4/5 EEPROM bootloaders: "RPi4", "RPi5" (little-endian).
FOURCC = {"4": 0x34695052, "5": 0x35695052}
#: Bootloaders whose DISCOVER differs: the Pi 3B ROM, the 3B+ ROM, the Pi 4 and Pi 5 EEPROMs.
MODELS = ("3b", "3b+", "4", "5")


@dataclass(frozen=True)
class PiIdentity:
    """The board whose bootloader is speaking: what goes into its DISCOVER."""

    model: str
    mac: str
    serial: str = "7285c0f2"
    #: Board revision code (Pi 4/5 option 97), e.g. 0xc03111 for a Pi 4B 4 GB.
    revision: int = 0xC03111

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"model {self.model!r} is not one of {', '.join(MODELS)}")

    @property
    def chaddr(self) -> bytes:
        return bytes.fromhex(self.mac.replace(":", ""))

    def next_xid(self) -> int:
        """A transaction id: Pi 3 ROMs all use one constant, EEPROM bootloaders pick one."""
        if self.model.startswith("3"):
            return PI3_XID
        return int.from_bytes(os.urandom(4), "big")

    @property
    def parameter_requests(self) -> bytes:
        return PI3B_REQUESTS if self.model == "3b" else PI3BPLUS_REQUESTS

    @property
    def guid(self) -> bytes:
        """Option 97: a type byte 0, then 16 bytes that differ by model (§1.1)."""
        serial = int(self.serial, 16).to_bytes(4, "little")
        if self.model == "3b":
            return b"\x00" + b"\x44" * 16
        if self.model == "3b+":
            return b"\x00" + serial * 4
        fourcc = FOURCC[self.model[0]].to_bytes(4, "little")
        revision = self.revision.to_bytes(4, "little")
        return b"\x00" + fourcc + revision + self.chaddr[2:] + serial


def discover(pi: PiIdentity, xid: int | None = None) -> bytes:
    """A DHCPDISCOVER as ``pi``'s bootloader sends it: unicast flag, no address."""
    options = [
        (OPTION_MESSAGE_TYPE, bytes([DISCOVER])),
        (OPTION_PARAMETER_REQUEST, pi.parameter_requests),
        (OPTION_CLIENT_ARCH, b"\x00\x00"),
        (OPTION_CLIENT_NDI, b"\x01\x02\x01"),
        (OPTION_CLIENT_GUID, pi.guid),
        (OPTION_VENDOR_CLASS, PI_VENDOR_CLASS),
    ]
    header = BOOTP.pack(
        *(BOOTREQUEST, 1, 6, 0, pi.next_xid() if xid is None else xid, 0, 0),
        *(bytes(4), bytes(4), bytes(4), bytes(4)),
        pi.chaddr.ljust(16, b"\x00"),
        bytes(64),
        bytes(128),
    )
    body = b"".join(bytes([code, len(value)]) + value for code, value in options)
    return header + MAGIC_COOKIE + body + bytes([OPTION_END])


@dataclass(frozen=True)
class DhcpMessage:
    """A parsed BOOTP/DHCP message; ``options`` maps code to raw value."""

    op: int
    xid: int
    flags: int
    yiaddr: str
    siaddr: str
    chaddr: bytes
    options: dict[int, bytes] = field(default_factory=dict)

    @property
    def mac(self) -> str:
        return ":".join(f"{byte:02x}" for byte in self.chaddr[:6])

    @property
    def message_type(self) -> int | None:
        value = self.options.get(OPTION_MESSAGE_TYPE)
        return value[0] if value else None

    @property
    def server_id(self) -> str | None:
        value = self.options.get(OPTION_SERVER_ID)
        return str(ipaddress.IPv4Address(value)) if value and len(value) == 4 else None

    @property
    def pxe_options(self) -> dict[int, bytes]:
        """The PXE sub-options encapsulated in option 43 (empty without one)."""
        return parse_options(self.options.get(OPTION_VENDOR_SPECIFIC, b""))

    @property
    def boot_menu(self) -> list[str]:
        """The menu texts of PXE sub-option 9: what a Pi matches "Raspberry Pi Boot" in."""
        return parse_boot_menu(self.pxe_options.get(PXE_BOOT_MENU, b""))


def parse_options(data: bytes) -> dict[int, bytes]:
    """Code/length/value triples up to option 255; pads skipped, truncation refused."""
    options: dict[int, bytes] = {}
    position = 0
    while position < len(data):
        code = data[position]
        if code == OPTION_END:
            break
        if code == OPTION_PAD:
            position += 1
            continue
        if position + 2 > len(data) or position + 2 + data[position + 1] > len(data):
            raise ValueError(f"option {code} runs past the end of the packet")
        length = data[position + 1]
        options[code] = data[position + 2 : position + 2 + length]
        position += 2 + length
    return options


def parse_boot_menu(data: bytes) -> list[str]:
    """PXE boot menu entries: 2-byte type, 1-byte length, that many bytes of text."""
    entries = []
    position = 0
    while position + 3 <= len(data):
        length = data[position + 2]
        entries.append(data[position + 3 : position + 3 + length].decode("ascii", "replace"))
        position += 3 + length
    return entries


def parse_message(data: bytes) -> DhcpMessage:
    """Decode a DHCP message; ValueError if it is not one."""
    if len(data) < BOOTP.size + len(MAGIC_COOKIE):
        raise ValueError(f"{len(data)} bytes is too short for a DHCP message")
    op, _, hlen, _, xid, _, flags, _, yiaddr, siaddr, _, chaddr, _, _ = BOOTP.unpack_from(data)
    if data[BOOTP.size : BOOTP.size + 4] != MAGIC_COOKIE:
        raise ValueError("no DHCP magic cookie")
    return DhcpMessage(
        op=op,
        xid=xid,
        flags=flags,
        yiaddr=str(ipaddress.IPv4Address(yiaddr)),
        siaddr=str(ipaddress.IPv4Address(siaddr)),
        chaddr=chaddr[:hlen],
        options=parse_options(data[BOOTP.size + 4 :]),
    )


def client_socket(interface: str) -> socket.socket:
    """A UDP socket on ``0.0.0.0:68`` of ``interface``, allowed to broadcast.

    Proxy offers come back broadcast to port 68 (§1.3), so the client must own that
    port; binding to the device keeps several test clients on one host apart. Call
    it inside the Pi's network namespace (``Namespace.call``)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
        sock.bind(("0.0.0.0", CLIENT_PORT))
    except OSError:
        sock.close()
        raise
    return sock


def offers(
    sock: socket.socket,
    pi: PiIdentity,
    timeout: float,
    resend: float = 1.0,
    cancelled: Callable[[], bool] | None = None,
) -> list[DhcpMessage]:
    """Broadcast ``pi``'s DISCOVER and collect every OFFER for it until ``timeout``.

    Like a Pi, the DISCOVER is sent again (same xid) every ``resend`` seconds while
    nothing answers: a broadcast may be lost. Returns once an offer arrived and the
    line stayed quiet for a moment, so a test waiting for an offer does not wait the
    whole timeout; an empty list means nobody answered within ``timeout`` seconds
    (or ``cancelled()`` turned true: a simulated Pi lost power)."""
    xid = pi.next_xid()
    packet = discover(pi, xid)
    received: list[DhcpMessage] = []
    deadline = time.monotonic() + timeout
    next_send = time.monotonic()
    while (now := time.monotonic()) < deadline and not (cancelled and cancelled()):
        if not received and now >= next_send:
            sock.sendto(packet, ("255.255.255.255", SERVER_PORT))
            next_send = now + resend
        wait = QUIET if received else next_send - now
        sock.settimeout(max(0.01, min(wait, deadline - now)))
        try:
            data = sock.recv(4096)
        except TimeoutError:
            if received:
                break
            continue
        reply = _reply_to(data, xid, pi)
        if reply is not None:
            received.append(reply)
    return received


def _reply_to(data: bytes, xid: int, pi: PiIdentity) -> DhcpMessage | None:
    """The OFFER in ``data`` if it answers this DISCOVER; None for anything else."""
    try:
        message = parse_message(data)
    except ValueError:
        return None
    answers_us = message.op == BOOTREPLY and message.xid == xid and message.mac == pi.mac
    return message if answers_us and message.message_type == OFFER else None
