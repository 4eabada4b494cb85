"""``bakery serve``: gunicorn in front of the app factory, after the host is prepared.

Recovery runs once here, in the master, before any worker forks; each worker then
builds its own app (and its own database connection)."""

from __future__ import annotations

import logging
import sys

from gunicorn.app.base import BaseApplication

from .app import create_app, prepare_host
from .config import Settings

#: A bake on a copy-only filesystem may take minutes; the director waits that long too.
WORKER_TIMEOUT = 900


class BakeryGunicorn(BaseApplication):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
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
        if "control_socket" in self.cfg.settings:
            # One control socket per data dir, not one per user: several bakeries
            # (or test servers) on a host must not fight over ~/.gunicorn.
            self.cfg.set("control_socket", str(self.settings.path("run", "gunicorn.ctl")))

    def load(self):
        return create_app(self.settings)


def run(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    prepared = prepare_host(settings)
    if prepared["admin_token_file"]:
        print(
            f"bakery: first start; admin token in {prepared['admin_token_file']}", file=sys.stderr
        )
    BakeryGunicorn(settings).run()
