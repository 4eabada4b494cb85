"""``bakery tftp``: the server in the foreground, in as many forked worker processes as
asked, all sharing one port; workers die with their parent."""

from __future__ import annotations

import logging
import os
import signal

from ...config import Settings
from ...supervisor import die_with
from ..bootfiles import SourceFactory
from .server import TftpServer
from .sockets import listening_socket

log = logging.getLogger(__name__)


def run_tftp(settings: Settings, open_source: SourceFactory, workers: int = 1) -> None:
    """Serve TFTP in the foreground until SIGTERM/SIGINT, with ``workers`` processes
    sharing the port (``SO_REUSEPORT``, each Pi's requests to one of them). Each process
    opens its own boot source, after the fork."""
    children = [_fork_worker(settings, open_source, workers) for _ in range(workers - 1)]
    try:
        _serve_process(settings, open_source, workers)
    finally:
        for pid in children:
            _stop_child(pid)


def _serve_process(settings: Settings, open_source: SourceFactory, workers: int) -> None:
    sock = listening_socket(*settings.tftp_address, workers)
    TftpServer(settings, open_source(settings), sock=sock).serve_forever()


def _fork_worker(settings: Settings, open_source: SourceFactory, workers: int) -> int:
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            die_with(parent)
            _serve_process(settings, open_source, workers)
        except BaseException:
            log.exception("TFTP worker failed")
            code = 1
        finally:
            os._exit(code)
    return pid


def _stop_child(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass
