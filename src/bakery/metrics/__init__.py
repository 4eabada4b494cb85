"""Prometheus metrics: what Bakery counts, where each process keeps its counts, and what a
scrape shows.

It sits with the foundation (it needs only the settings) so that every layer can count:
the TFTP and HTTP boot servers a file sent, dnsmasq's supervisor an offer, the power
controller a call, the fleet a bake, a boot and an import, the API app a request. The
modules: ``catalogue`` (every family, and the call that counts in each), ``kinds`` (a boot
file's kind, their one label), ``family`` (a declared family, made at its first count),
``directory`` (the multiprocess directory each process joins) and ``exposition`` (a
scrape, and the server for ``metrics_bind``).
"""

from __future__ import annotations

from .catalogue import (
    api_request,
    bake_done,
    bake_failed,
    bake_started,
    bakeform_import,
    dhcp_offered,
    http_boot_failed,
    http_boot_sent,
    power_called,
    tftp_failed,
    tftp_sent,
    userspace_up,
)
from .directory import current_directory, directory_of, start_afresh, use_directory
from .exposition import MetricsServer, Scrape, exposition, run_metrics_server
from .family import DECLARED
from .kinds import FILE_KINDS, file_kind

__all__ = [
    "DECLARED",
    "FILE_KINDS",
    "MetricsServer",
    "Scrape",
    "api_request",
    "bake_done",
    "bake_failed",
    "bake_started",
    "bakeform_import",
    "current_directory",
    "dhcp_offered",
    "directory_of",
    "exposition",
    "file_kind",
    "http_boot_failed",
    "http_boot_sent",
    "power_called",
    "run_metrics_server",
    "start_afresh",
    "tftp_failed",
    "tftp_sent",
    "use_directory",
    "userspace_up",
]
