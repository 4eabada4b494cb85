"""``bakery http-boot``: the HTTP boot server a Pi 4 or Pi 5 EEPROM set to boot mode 7
fetches its bake's ``boot.img`` and ``boot.sig`` from (pi-http-boot).

The EEPROM names the URL: ``http://<HTTP_HOST>:<HTTP_PORT>/<HTTP_PATH>/boot.img``; Bakery
serves ``/<serial>/boot.img`` and ``/<serial>/boot.sig``, so each Pi's ``HTTP_PATH`` is its
serial. A request is answered only when it comes from the Pi's own address, confirmed as
the TFTP server confirms it (``BootSource.boot_target``): another host on the Pi LAN that
asks for a Pi's image gets a 404, as does a Pi whose bake boots over TFTP. Plain HTTP,
as the bootloader speaks it outside secure boot; what makes it safe to boot is the
signature, which the bootloader checks against the key in its EEPROM.

A stdlib threading server: one thread per connection (a rack of Pis, not the internet),
``sendfile`` for the image, a socket timeout against clients that stall. The fleet is
asked on one database thread, as the TFTP server asks it, so its connection stays open
between requests (opening one per request cost more than the rest of the request).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from .. import identifiers, metrics
from ..config import Settings
from . import bootfiles, bootimage
from .bootfiles import BootSource, BootTarget, SourceFactory
from .tftp.boots import PiBoots

log = logging.getLogger(__name__)
T = TypeVar("T")

REQUEST_RE = re.compile(r"/(?P<serial>[0-9A-Fa-f]{8})/(?P<name>boot\.img|boot\.sig)")
#: Locks serialising boot.img builds, a bake's always the same one of them.
BUILD_LOCKS = 64
#: Seconds a connection may stall (a slow Pi on a busy LAN takes well under one).
SOCKET_TIMEOUT = 30


class HttpBootServer(ThreadingHTTPServer):
    """Serves each bake's boot image to its Pi; the request threads reach ``source``
    through ``ask``, which runs every call on the one database thread."""

    daemon_threads = True
    #: The listen backlog: socketserver's 5 drops the SYNs of a rack powered on at once,
    #: and each dropped Pi waits a second for its retry.
    request_queue_size = 1024

    def __init__(self, settings: Settings, source: BootSource) -> None:
        address = settings.http_boot_address
        if address is None:
            raise ValueError("setting 'http_boot_bind' is empty: HTTP boot is off")
        self.settings, self.source = settings, source
        self.key_file = settings.http_boot_key_path
        bootimage.ensure_key(self.key_file)
        self._build_locks = [threading.Lock() for _ in range(BUILD_LOCKS)]
        #: When each Pi was last turned away; used on the database thread only.
        self._boots = PiBoots()
        self._database = ThreadPoolExecutor(max_workers=1, thread_name_prefix="http-boot-db")
        super().__init__(address, BootRequest)

    def ask(self, call: Callable[..., T], *args: Any) -> T:
        """Run a boot source call on the database thread and wait for its answer."""
        return self._database.submit(call, *args).result()

    def server_close(self) -> None:
        super().server_close()
        self._database.submit(self.source.close).result()
        self._database.shutdown()

    def turn_away(self, serial: str) -> None:
        """A Pi served nothing keeps asking: switch it off if it is free, at most once
        per ``TURN_AWAY_INTERVAL`` (anyone on the Pi LAN can send these requests)."""

        def on_database_thread() -> None:
            if self._boots[serial].time_to_turn_away(time.monotonic()):
                self.source.turn_away(serial)

        self.ask(on_database_thread)

    def image_of(self, target: BootTarget) -> bootimage.BootImage:
        """The bake's boot image, made by one request thread at a time per bake."""
        with self._build_locks[hash(target.bake_id) % BUILD_LOCKS]:
            return bootimage.boot_image(target, self.key_file, self.settings.config_txt_drop)


class BootRequest(BaseHTTPRequestHandler):
    server: HttpBootServer
    timeout = SOCKET_TIMEOUT
    protocol_version = "HTTP/1.1"
    server_version = "bakery-http-boot"

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self._serve(send_body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(send_body=False)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s %s", self.client_address[0], format % args)

    def _serve(self, send_body: bool) -> None:
        match = REQUEST_RE.fullmatch(urlsplit(self.path).path)
        if match is None:
            self._fail(HTTPStatus.NOT_FOUND, "no such file")
            return
        serial, name = identifiers.serial(match["serial"]), match["name"]
        server, source = self.server, self.server.source
        target = server.ask(source.boot_target, serial, self.client_address[0])
        if target is None:
            server.turn_away(serial)
            self._fail(HTTPStatus.NOT_FOUND, "nothing to boot")
            return
        if target.http_dir is None:
            message = f"no such file: {name} (the bake boots over TFTP)"
            self._record(serial, message, step="missing", file=name)
            self._fail(HTTPStatus.NOT_FOUND, "the bake boots over TFTP")
            return
        try:
            made = server.image_of(target)
        except (bootimage.BootImageError, OSError) as exc:
            metrics.http_boot_failed(name)
            self._record(serial, f"{name} not made: {exc}", step="failed", file=name)
            self._fail(HTTPStatus.SERVICE_UNAVAILABLE, "boot image not available")
            return
        path = made.image if name == bootimage.IMAGE else made.signature
        self._send_file(serial, name, path, send_body)

    def _send_file(self, serial: str, name: str, path: Path, send_body: bool) -> None:
        started = time.monotonic()
        with open(path, "rb") as data:
            size = os.fstat(data.fileno()).st_size
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            if not send_body:
                return
            self.wfile.flush()
            try:
                self.connection.sendfile(data)
            except OSError as exc:
                metrics.http_boot_failed(name)
                reason = exc.strerror or type(exc).__name__
                message = f"{name} failed: {reason}"
                self._record(serial, message, step="failed", file=name, reason=reason)
                self.close_connection = True
                return
        metrics.http_boot_sent(name, size)
        seconds = round(time.monotonic() - started, 4)
        message = bootfiles.served_message(name, size, seconds, "http")
        self._record(serial, message, step="served", file=name, size=size, seconds=seconds)

    def _record(self, serial: str, message: str, **data: Any) -> None:
        """A step of the Pi's boot, for its timeline."""
        source = self.server.source
        self.server.ask(source.record_boot, serial, message, {**data, "protocol": "http"})

    def _fail(self, status: HTTPStatus, text: str) -> None:
        body = f"{text}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def run_http_boot(settings: Settings, open_source: SourceFactory) -> None:
    """Serve HTTP boot in the foreground until SIGTERM/SIGINT."""
    server = HttpBootServer(settings, open_source(settings))
    log.info("HTTP boot on %s:%d", *server.server_address[:2])
    try:
        server.serve_forever()
    finally:
        server.server_close()
