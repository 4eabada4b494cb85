"""``bakery netboot``: the TFTP server, the HTTP boot server and dnsmasq, supervised, in
one process; the metrics server of ``metrics_bind`` too.

``bakery serve`` starts this process before gunicorn forks its workers (so no worker
ever inherits a supervisor's pipe) and stops it on exit; it also stops by itself
when its parent goes away (its stdin closes). Run alone, it serves netboot for an
API running elsewhere on the same data dir and database."""

from __future__ import annotations

import logging
import sys
import threading
from typing import TextIO

from .. import nfsserver
from ..config import Settings, dump_settings
from ..signals import stop_event
from ..supervisor import ChildSupervisor
from .bootfiles import SourceFactory
from .dnsmasq import DnsmasqSupervisor, render_config

log = logging.getLogger(__name__)


def netboot_children(
    settings: Settings, open_source: SourceFactory
) -> list[ChildSupervisor | DnsmasqSupervisor]:
    """The TFTP server and, when their addresses are set, the HTTP boot server, the
    bootloader log listener and the metrics server (``bakery tftp``, ``http-boot``,
    ``netconsole`` and ``metrics`` processes on the same settings) and, when enabled,
    dnsmasq for proxy DHCP, its DHCP lines recorded through ``open_source``, and the
    host's own nfs-ganesha when ``ganesha_binary`` names one (the Pis' roots are
    exported by it).

    The metrics server is here, though it serves no Pi, because this process is what
    ``bakery serve`` has for side servers: started before gunicorn forks, restarted with
    a back-off when it dies, stopped with the master; a process of its own keeps a slow
    scrape (it reads the database) off the API's workers."""
    children: list[ChildSupervisor | DnsmasqSupervisor] = []
    servers = ["tftp"] if settings.tftp_enabled else []
    if settings.http_boot_bind:
        servers.append("http-boot")
    if settings.netconsole_bind:
        servers.append("netconsole")
    if settings.metrics_bind:
        servers.append("metrics")
    if servers:
        config = dump_settings(settings, settings.path("run", "settings.json"))
    for name in servers:
        command = [sys.executable, "-m", "bakery.cli", name, "--config", str(config)]
        children.append(ChildSupervisor(name, command))
    if settings.dnsmasq_enabled:
        render_config(settings)  # a bad setting stops the start here, in one line
        children.append(DnsmasqSupervisor(settings, open_source(settings)))
    if settings.ganesha_binary:
        children.append(ChildSupervisor("nfs-ganesha", nfsserver.command(settings)))
    return children


#: Seconds between two looks for boots past their deadline.
STALL_CHECK_INTERVAL = 15.0


def watch_boots(settings: Settings, open_source: SourceFactory, done: threading.Event) -> None:
    """Until ``done``: mark the baked Pis whose userspace is past its deadline."""
    source = open_source(settings)
    try:
        while not done.wait(STALL_CHECK_INTERVAL):
            try:
                source.check_stalled()
            except Exception:  # a database hiccup must not end the watch
                log.exception("could not check for stalled boots")
    finally:
        source.close()


def run_netboot(
    settings: Settings, open_source: SourceFactory, parent: TextIO | None = None
) -> None:
    """Run the netboot children until SIGTERM/SIGINT, or until ``parent`` (a pipe
    from the process that started us) reaches end of file."""
    children = netboot_children(settings, open_source)
    done = stop_event()
    if parent is not None:

        def watch_parent() -> None:
            parent.read()
            done.set()

        threading.Thread(target=watch_parent, daemon=True).start()
    for child in children:
        child.start()
    threading.Thread(target=watch_boots, args=(settings, open_source, done), daemon=True).start()
    log.info("netboot: running %s", ", ".join(type(c).__name__ for c in children) or "nothing")
    done.wait()
    for child in children:
        child.stop()
