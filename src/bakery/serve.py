"""``bakery serve``: gunicorn in front of the app factory, after the host is prepared,
with the netboot services (TFTP server, dnsmasq) as supervised children.

Recovery runs once here, in the master, before any worker forks; each worker then
builds its own app (and its own database connection). The children start when
gunicorn is ready and stop when it exits, from the master only."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterable
from typing import IO, cast

from gunicorn.app.base import BaseApplication

from .app import create_app, prepare_host
from .config import Settings, dump_settings
from .netboot.dnsmasq import render_config

#: A bake on a copy-only filesystem may take minutes; the director waits that long too.
WORKER_TIMEOUT = 900


class BakeryGunicorn(BaseApplication):
    def __init__(self, settings: Settings, netboot: subprocess.Popen[bytes] | None = None) -> None:
        self.settings = settings
        self.netboot = netboot
        super().__init__()

    def load_config(self) -> None:
        self.cfg.set("bind", [self.settings.bind])
        self.cfg.set("workers", self.settings.workers)
        self.cfg.set("timeout", WORKER_TIMEOUT)
        self.cfg.set("graceful_timeout", 60)
        self.cfg.set("accesslog", "-")
        self.cfg.set("errorlog", "-")
        self.cfg.set("loglevel", self.settings.log_level.lower())
        self.cfg.set("proc_name", "bakery")
        if self.settings.tls_cert_file:
            self.cfg.set("certfile", self.settings.tls_cert_file)
            self.cfg.set("keyfile", self.settings.tls_key_file)
        if "control_socket" in self.cfg.settings:
            # One control socket per data dir, not one per user: several bakeries
            # (or test servers) on a host must not fight over ~/.gunicorn.
            self.cfg.set("control_socket", str(self.settings.path("run", "gunicorn.ctl")))

        if self.netboot is not None:
            # Workers must not hold netboot's stdin open, or it cannot see the master die.
            # (start_netboot gave it a stdin pipe)
            self.cfg.set(
                "post_fork",
                lambda _server, _worker: cast("IO[bytes]", self.netboot.stdin).close(),
            )
            self.cfg.set("on_exit", lambda _server: stop_netboot(self.netboot))

    # A WSGI app; its arguments are left loose because Flask types ``environ`` as a dict
    # where gunicorn's stubs promise any mutable mapping.
    def load(self) -> Callable[..., Iterable[bytes]]:
        return create_app(self.settings)


def start_netboot(settings: Settings) -> subprocess.Popen[bytes] | None:
    """``bakery netboot`` as a child, started before gunicorn forks any worker.

    It holds the read end of a pipe whose write end only this process has: when
    the master dies, even by SIGKILL, netboot sees end of file and stops."""
    if not (settings.tftp_enabled or settings.dnsmasq_enabled):
        return None
    if settings.dnsmasq_enabled:
        render_config(settings)  # a bad setting stops the start here, in one line
    config = dump_settings(settings, settings.path("run", "settings.json"))
    return subprocess.Popen(
        [sys.executable, "-m", "bakery.cli", "netboot", "--config", str(config), "--with-parent"],
        stdin=subprocess.PIPE,
    )


def stop_netboot(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()


def run(settings: Settings) -> None:
    """Prepare the host, start netboot, then serve the API until gunicorn exits."""
    prepared = prepare_host(settings)
    if prepared["admin_token_file"]:
        print(
            f"bakery: first start; admin token in {prepared['admin_token_file']}", file=sys.stderr
        )
    netboot = start_netboot(settings)
    BakeryGunicorn(settings, netboot).run()
