"""The Pi-shaped TFTP client lives in ``bakery.sim.tftp_client`` (simulated Pis use it
at runtime); this module keeps the tests' and benchmarks' import path."""

from bakery.sim.tftp_client import (  # noqa: F401
    EARLY_TERMINATE,
    PI4_BLKSIZE,
    PI4_BOOT_FILES,
    Download,
    PiClient,
    TftpError,
    pi4_sequence,
    run,
)
