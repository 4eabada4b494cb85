"""``bakery serve``: gunicorn in front of the app factory, after the host is prepared,
with the netboot services (TFTP server, dnsmasq) as supervised children.

Recovery runs once here, in the master, before any worker forks; each worker then
builds its own app (and its own database connection). The children start when
gunicorn is ready and stop when it exits, from the master only.

Workers are ``BakeryWorker``s: gunicorn's threaded worker, so one slow client holds one
thread, not a whole worker; a request's head must arrive within ``HEAD_TIMEOUT`` and its
body may pause at most ``BODY_IDLE_TIMEOUT`` (two idle clients sending half a header
froze the sync workers, /health included); gunicorn's own error pages (400, 414, 431...)
answer in the API's JSON; and a worker dies with its master, so a restart finds the port
free."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import IO, Any, cast

from flask import Flask
from gunicorn import util as gunicorn_util
from gunicorn.app.base import BaseApplication
from gunicorn.workers.gthread import TConn, ThreadWorker

from . import models
from .api.errors import HTTP_CODES
from .app import create_app, prepare_host
from .config import Settings, dump_settings
from .fleet import HEARTBEAT_SECONDS, Fleet, JobRunners
from .models import shared_database, utcnow
from .netboot.dnsmasq import render_config
from .signals import SignalRelay
from .supervisor import die_with
from .web.stream import stop_streams

log = logging.getLogger(__name__)

#: Seconds without a heartbeat from a worker's main loop before the master replaces it
#: (requests run in threads: a long bake does not stop the heartbeat).
WORKER_TIMEOUT = 60
#: Threads per worker: requests one worker serves at once.
WORKER_THREADS = 8
#: Seconds a client has to send a request's whole head once it has started.
HEAD_TIMEOUT = 10.0
#: Seconds a request body (an upload) may pause before the request is dropped.
BODY_IDLE_TIMEOUT = 120.0
#: Threads per worker doing the jobs other hosts send this one (PostgreSQL only).
JOB_RUNNERS = 2


class BakeryWorker(ThreadWorker):
    """gunicorn's threaded worker with deadlines on slow clients, JSON error pages and
    no life after its master."""

    def init_process(self) -> None:
        die_with(self.ppid, signal.SIGKILL)
        # gunicorn writes its own errors (a request line too long, bad headers) through
        # this one function: answer them as the API answers every error.
        gunicorn_util.write_error = write_json_error
        self._heads: dict[TConn, float] = {}
        self._job_runners: JobRunners | None = None
        self._heads_lock = threading.Lock()
        self._stop_relay = SignalRelay(self._stop_background_work)
        super().init_process()

    def load_wsgi(self) -> None:
        """The app, then (on a database several hosts share) the threads that do the
        jobs other hosts' APIs send this host, with the app's own fleet."""
        super().load_wsgi()
        if shared_database():
            fleet: Fleet = cast(Flask, self.wsgi).extensions["bakery.fleet"]
            self._job_runners = fleet.job_runners(JOB_RUNNERS)
            self._job_runners.start()

    def handle_exit(self, sig: int, frame: Any) -> None:
        """A graceful stop (SIGTERM). A signal handler: what takes locks is done by
        the relay's thread (see ``bakery.signals``)."""
        self._stop_relay.notify()
        super().handle_exit(sig, frame)

    def _stop_background_work(self) -> None:
        """The dashboard's live timelines end now, or each would hold the stop for up to
        a minute; no new job is taken (one still running when the worker exits loses its
        lease, which its asker sees)."""
        stop_streams()
        if self._job_runners is not None:
            self._job_runners.stop()

    def handle(self, conn: TConn) -> Any:
        with self._heads_lock:
            self._heads[conn] = time.monotonic() + HEAD_TIMEOUT
        try:
            return super().handle(conn)
        finally:
            self._head_done(conn)

    def handle_request(self, req: Any, conn: TConn) -> Any:
        """The head is in: the application may take its time, the body may not stall."""
        self._head_done(conn)
        conn.sock.settimeout(BODY_IDLE_TIMEOUT)
        return super().handle_request(req, conn)

    def murder_pending(self) -> None:
        """Runs about once a second in the worker's main loop: also cut the connections
        whose head is late (the thread reading it wakes up to a closed socket)."""
        super().murder_pending()
        now = time.monotonic()
        with self._heads_lock:
            late = [conn for conn, deadline in self._heads.items() if deadline < now]
            for conn in late:
                del self._heads[conn]
        for conn in late:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)

    def _head_done(self, conn: TConn) -> None:
        with self._heads_lock:
            self._heads.pop(conn, None)


def write_json_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's error page, as the API's JSON error (its own parameter names: it is
    put in place of ``gunicorn.util.write_error``)."""
    code = HTTP_CODES.get(status_int, "error")
    body = json.dumps({"error": {"code": code, "message": mesg, "details": None}}).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    gunicorn_util.write_nonblock(sock, head.encode("latin-1") + body)


class BakeryGunicorn(BaseApplication):
    def __init__(self, settings: Settings, netboot: subprocess.Popen[bytes] | None = None) -> None:
        self.settings = settings
        self.netboot = netboot
        super().__init__()

    def load_config(self) -> None:
        self.cfg.set("bind", [self.settings.bind])
        self.cfg.set("workers", self.settings.workers)
        self.cfg.set("worker_class", f"{__name__}.BakeryWorker")
        self.cfg.set("threads", WORKER_THREADS)
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
    the master dies, even by SIGKILL, netboot sees end of file and stops. It also
    supervises the metrics server of ``metrics_bind`` and the NFS server of
    ``ganesha_binary``."""
    servers = (settings.tftp_enabled, settings.dnsmasq_enabled, settings.metrics_bind)
    if not any(servers) and not settings.ganesha_binary:
        return None
    if settings.dnsmasq_enabled:
        render_config(settings)  # a bad setting stops the start here, in one line
    return subprocess.Popen(
        [*_child_command(settings, "netboot"), "--with-parent"], stdin=subprocess.PIPE
    )


def start_power_restore(settings: Settings) -> subprocess.Popen[bytes]:
    """``bakery restore-power`` as a child: relays that hang (each up to the power
    timeout) must not keep the API from listening. It restores the Pis there were at
    this start, and stops with this process; gunicorn's master reaps it."""
    started = utcnow().strftime("%Y-%m-%dT%H:%M:%S.%f")
    command = [*_child_command(settings, "restore-power"), "--registered-before", started]
    return subprocess.Popen([*command, "--with-parent"], stdin=subprocess.DEVNULL)


def _child_command(settings: Settings, command: str) -> list[str]:
    """A ``bakery`` command run on exactly this process's settings."""
    config = dump_settings(settings, settings.path("run", "settings.json"))
    return [sys.executable, "-m", "bakery.cli", command, "--config", str(config)]


def stop_netboot(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()


def run(settings: Settings) -> None:
    """Prepare the host, start netboot and the power restore, then serve the API until
    gunicorn exits."""
    prepared = prepare_host(settings)
    if prepared["admin_token_file"]:
        print(
            f"bakery: first start; admin token in {prepared['admin_token_file']}", file=sys.stderr
        )
    beating = start_heartbeat(settings, prepared["host_instance"])
    netboot = start_netboot(settings)
    start_power_restore(settings)
    try:
        BakeryGunicorn(settings, netboot).run()
    finally:
        beating.set()
        with models.database.connection_context():
            Fleet(settings).leave_host(prepared["host_instance"])


def start_heartbeat(settings: Settings, instance: str) -> threading.Event:
    """The host's heartbeat, from the master every ``HEARTBEAT_SECONDS`` until the
    returned event is set. Should another process have taken the host's name (this one
    was stalled long enough to be thought dead), this one stops: two processes must
    never both act as one host."""
    done = threading.Event()
    fleet = Fleet(settings)

    def beat() -> None:
        while not done.wait(HEARTBEAT_SECONDS):
            try:
                with models.database.connection_context():
                    still_ours = fleet.heartbeat(instance)
                    if still_ours and shared_database():
                        fleet.forget_ended_jobs()
            except Exception:  # a database that is down for a while: try again
                log.exception("host heartbeat failed")
                continue
            if not still_ours:
                log.error("another process now serves as host %s: stopping", settings.host_id)
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=beat, name="host-heartbeat", daemon=True).start()
    return done
