"""The TFTP server Raspberry Pis netboot from (RFC 1350, 2347, 2348, 2349).

``<serial>/<path>`` is answered from the boot files of that Pi's current bake, with
``cmdline.txt`` rendered for its NFS root and ``config.txt`` trimmed; bare names (the
Pi 3 ROM's ``bootcode.bin``) come from the firmware directory. The Pi bootloaders'
habits shape it (pi-netboot §2, §6): a ``tsize`` probe aborted with "Early terminate"
before most downloads, a new source port per request, ``//`` in paths, 1 s
retransmits, block numbers that wrap to 0.

Speed comes from the fact that all Pis on one bakeform read identical blocks: each
file is cached once per block size as a ready-made run of DATA packets, so sending a
block is one ``send`` of a memoryview slice. Every transfer has its own connected
socket (its TID); all of them sit in one epoll set that the event loop (uvloop when
installed) watches as a single reader, so a wake-up serves every ready transfer in one
loop instead of one loop callback per packet. Retransmits are driven by one periodic
sweep rather than a timer per packet. The fleet (database) is only asked about a Pi
once per request burst, never per packet, always from its one thread, and boot events
are written in batches.

The modules: ``packets`` (the codec), ``cache`` (packet images), ``boots`` (what is
remembered of each Pi between requests), ``transfer`` (one read,
the hot path), ``server`` (requests and the event loop), ``sockets``, ``workers``.
"""

from __future__ import annotations

from .server import TftpServer
from .sockets import listening_socket
from .workers import run_tftp

__all__ = ["TftpServer", "listening_socket", "run_tftp"]
