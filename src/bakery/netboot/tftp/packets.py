"""The TFTP wire format (RFC 1350, options per RFC 2347/2348/2349), as pure functions.

Kept apart from the server so the codec is unit-tested without sockets, and so the
test client that plays a Pi speaks exactly the same bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum


class Opcode(IntEnum):
    RRQ = 1
    WRQ = 2
    DATA = 3
    ACK = 4
    ERROR = 5
    OACK = 6


class ErrorCode(IntEnum):
    UNDEFINED = 0
    FILE_NOT_FOUND = 1
    ACCESS_VIOLATION = 2
    ILLEGAL_OPERATION = 4
    UNKNOWN_TID = 5
    OPTION_REFUSED = 8


#: RFC 2348 bounds, and the size every client gets without the option.
MIN_BLKSIZE = 8
MAX_BLKSIZE = 65464
DEFAULT_BLKSIZE = 512
#: Largest block number before it wraps to 0 (pi-netboot §2.3, §2.5).
BLOCK_MODULO = 0x10000

_HEADER = struct.Struct("!HH")


class PacketError(ValueError):
    """A datagram that is not a well-formed TFTP packet of the expected kind."""


@dataclass(frozen=True)
class Request:
    """A read or write request: the raw file name as sent, the mode, and the options
    (names lower-cased, values as sent)."""

    opcode: Opcode
    filename: str
    mode: str
    options: dict[str, str] = field(default_factory=dict)


def parse_request(packet: bytes) -> Request:
    """Decode an RRQ/WRQ. File names are decoded as Latin-1 so every byte (including a
    NUL smuggled in a name, or non-ASCII) survives to the path check instead of
    failing here in a way the client cannot be told about."""
    if len(packet) < 4:
        raise PacketError("packet too short")
    opcode = int.from_bytes(packet[:2], "big")
    if opcode not in (Opcode.RRQ, Opcode.WRQ):
        raise PacketError(f"opcode {opcode} is not a request")
    fields = packet[2:].split(b"\0")
    if len(fields) < 3 or fields[-1] != b"":
        raise PacketError("request fields are not NUL-terminated")
    fields = fields[:-1]
    filename, mode, rest = fields[0], fields[1], fields[2:]
    if len(rest) % 2:
        raise PacketError("option without a value")
    options = {
        rest[i].decode("latin-1").lower(): rest[i + 1].decode("latin-1")
        for i in range(0, len(rest), 2)
    }
    return Request(
        Opcode(opcode), filename.decode("latin-1"), mode.decode("latin-1").lower(), options
    )


def opcode_of(packet: bytes) -> int:
    """The opcode, or 0 for a runt datagram (which every caller ignores)."""
    return int.from_bytes(packet[:2], "big") if len(packet) >= 2 else 0


def parse_data(packet: bytes) -> tuple[int, bytes]:
    """Block number and payload of a DATA packet."""
    if len(packet) < 4 or opcode_of(packet) != Opcode.DATA:
        raise PacketError("not a DATA packet")
    return _HEADER.unpack_from(packet)[1], packet[4:]


def parse_error(packet: bytes) -> tuple[int, str]:
    """Code and message of an ERROR packet."""
    if len(packet) < 4 or opcode_of(packet) != Opcode.ERROR:
        raise PacketError("not an ERROR packet")
    message = packet[4:].split(b"\0", 1)[0]
    return _HEADER.unpack_from(packet)[1], message.decode("latin-1")


def parse_oack(packet: bytes) -> dict[str, str]:
    """The options a server accepted."""
    if opcode_of(packet) != Opcode.OACK:
        raise PacketError("not an OACK")
    fields = packet[2:].split(b"\0")[:-1]
    if len(fields) % 2:
        raise PacketError("OACK option without a value")
    return {
        fields[i].decode("latin-1").lower(): fields[i + 1].decode("latin-1")
        for i in range(0, len(fields), 2)
    }


def encode_request(
    filename: str, options: dict[str, str | int] | None = None, mode: str = "octet"
) -> bytes:
    """An RRQ, as a client sends it."""
    parts = [filename, mode]
    for name, value in (options or {}).items():
        parts += [name, str(value)]
    return int(Opcode.RRQ).to_bytes(2, "big") + b"".join(p.encode("latin-1") + b"\0" for p in parts)


def encode_oack(options: Mapping[str, str | int]) -> bytes:
    body = b"".join(f"{name}\0{value}\0".encode("latin-1") for name, value in options.items())
    return int(Opcode.OACK).to_bytes(2, "big") + body


def encode_ack(block: int) -> bytes:
    return _HEADER.pack(Opcode.ACK, block % BLOCK_MODULO)


def encode_error(code: ErrorCode | int, message: str) -> bytes:
    return _HEADER.pack(Opcode.ERROR, code) + message.encode("latin-1", "replace") + b"\0"


def negotiate(options: dict[str, str], size: int, max_blksize: int) -> dict[str, int]:
    """The options we grant for a read of ``size`` bytes: tsize (the real size) and
    blksize (clamped to ``max_blksize``). Unknown or malformed options are left out
    of the OACK, which RFC 2347 defines as refusing them."""
    granted: dict[str, int] = {}
    if "tsize" in options:
        granted["tsize"] = size
    blksize = _int_option(options.get("blksize"))
    if blksize is not None and blksize >= MIN_BLKSIZE:
        granted["blksize"] = min(blksize, max_blksize, MAX_BLKSIZE)
    return granted


def _int_option(value: str | None) -> int | None:
    if value is None or not value.isdigit():
        return None
    return int(value)


def block_count(size: int, blksize: int) -> int:
    """DATA packets a file takes: a file that fills its last block exactly ends with
    an empty block (RFC 1350: a short block ends the transfer)."""
    return size // blksize + 1
