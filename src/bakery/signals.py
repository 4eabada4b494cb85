"""Stopping on SIGTERM and SIGINT without deadlocking.

A Python signal handler runs on the main thread between two bytecodes, wherever that
thread is, and a second signal can arrive while the first handler still runs. A handler
that sets a ``threading.Event`` takes the Event's lock: when the second signal comes in
while the first handler holds that lock, the nested handler waits on it forever. That is
no corner case: ``bakery serve``'s workers get a SIGTERM from the process-group kill and
another from gunicorn's master; an operator presses Ctrl-C twice. So a handler here only
writes a byte to a pipe, which takes no lock, and a thread of its own does the rest."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class SignalRelay:
    """Calls ``action`` once, from a daemon thread, after the first ``notify()``.

    ``notify`` is the part that may run in a signal handler; make the relay in the
    process that receives the signals (a thread does not survive a fork)."""

    def __init__(self, action: Callable[[], None]) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        relay = threading.Thread(target=self._relay, args=(action,), name="signal-relay")
        relay.daemon = True
        relay.start()

    def notify(self, *_: object) -> None:
        """Signal-safe: one write to a pipe; a full pipe already holds the news."""
        with contextlib.suppress(BlockingIOError):
            os.write(self._write, b"\0")

    def _relay(self, action: Callable[[], None]) -> None:
        os.read(self._read, 1)
        action()


def stop_event() -> threading.Event:
    """An Event set at the first SIGTERM or SIGINT of this process."""
    stop = threading.Event()
    relay = SignalRelay(stop.set)
    for signum in STOP_SIGNALS:
        signal.signal(signum, relay.notify)
    return stop
