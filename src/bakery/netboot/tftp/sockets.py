"""The server's sockets: the shared RRQ socket (``SO_REUSEPORT``, requests steered to a
worker by source address) and one connected socket per transfer."""

from __future__ import annotations

import ctypes
import logging
import socket
import struct

log = logging.getLogger(__name__)

#: A classic BPF program choosing the socket of a ``SO_REUSEPORT`` group (linux/filter.h,
#: asm-generic/socket.h): load a word relative to the network header, modulo, return.
SO_ATTACH_REUSEPORT_CBPF = 51
BPF_LD_W_ABS, BPF_ALU_MOD_K, BPF_RET_A = 0x20, 0x94, 0x16
SKF_NET_OFF = 0xFFF00000  # -0x100000 as the unsigned offset the kernel reads
IPV4_SOURCE_OFFSET = 12
#: Pis whose boot bookkeeping is kept (oldest forgotten first).


def listening_socket(host: str, port: int, workers: int = 1) -> socket.socket:
    """The RRQ socket, with ``SO_REUSEPORT`` so ``workers`` processes can share the port,
    each request going to the worker of its source address (``steer_by_source``)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setblocking(False)
    sock.bind((host, port))
    if workers > 1:
        steer_by_source(sock, workers)
    return sock


def steer_by_source(sock: socket.socket, workers: int) -> None:
    """Make the kernel give each request on the shared port to socket number
    ``source address % workers`` of the group, instead of spreading requests by a hash of
    address and port: a Pi asks for every file from a new port, and what a worker knows
    of a Pi's boot (its first request, the files that tell its model, when it was last
    turned away) must all be in one worker. Where the kernel does not take the program,
    the hash stays (and a warning says so)."""
    program = b"".join(
        struct.pack("=HBBI", code, 0, 0, k)
        for code, k in (
            (BPF_LD_W_ABS, SKF_NET_OFF + IPV4_SOURCE_OFFSET),  # A = the IPv4 source address
            (BPF_ALU_MOD_K, workers),  # A %= workers
            (BPF_RET_A, 0),  # the index of the socket in the group
        )
    )
    instructions = ctypes.create_string_buffer(program, len(program))
    fprog = struct.pack("HP", len(program) // 8, ctypes.addressof(instructions))
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)
    except OSError as exc:
        log.warning("TFTP workers share requests by hash, not by Pi: %s", exc.strerror)


def transfer_socket(host: str, client: tuple[str, int]) -> socket.socket:
    """A new TID: an ephemeral port connected to the client, so the kernel drops
    packets from anyone else."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind((host, 0))
    sock.connect(client)
    return sock
