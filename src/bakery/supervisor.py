"""Keep a child process running: restart it with a bounded back-off when it dies,
and hand each line it prints to a callback.

``bakery serve`` supervises its helpers this way (dnsmasq, the TFTP server) from
the gunicorn master, so the API, proxy DHCP and TFTP stop and start together.
"""

from __future__ import annotations

import collections
import ctypes
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)

#: Restart back-off: the first restart waits this long, each quick death doubles it,
#: up to the cap. A child that ran ``STABLE_AFTER`` seconds resets it.
FIRST_RESTART_DELAY = 1.0
MAX_RESTART_DELAY = 60.0
STABLE_AFTER = 60.0
#: Output lines kept to explain why a child exited.
LOG_TAIL = 50
PR_SET_PDEATHSIG = 1  # linux/prctl.h


class ChildSupervisor:
    """One command, kept running by a daemon thread until ``stop()``.

    ``on_line(pid, line)`` sees every line the child writes to stderr (stdout is
    discarded). ``stop()`` only acts in the process that called ``start()``, so a
    forked gunicorn worker passing through an exit hook cannot kill the child."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        on_line: Callable[[int, str], None] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.command = list(command)
        self.on_line = on_line or self._log_line
        self.env = env
        self.tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL)
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None
        self._owner_pid = os.getpid()

    @property
    def process(self) -> subprocess.Popen[str] | None:
        return self._process

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{self.name} supervisor already started")
        self._owner_pid = os.getpid()
        self._stopping.clear()
        self._thread = threading.Thread(target=self._supervise, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the child (SIGKILL after ``timeout``) and join the thread."""
        if os.getpid() != self._owner_pid:
            return
        self._stopping.set()
        with self._lock:
            process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _supervise(self) -> None:
        failures = 0
        while True:
            started = time.monotonic()
            outcome = self._run_once()
            if self._stopping.is_set():
                return
            lived = time.monotonic() - started
            failures = 1 if lived >= STABLE_AFTER else failures + 1
            delay = min(FIRST_RESTART_DELAY * 2 ** (failures - 1), MAX_RESTART_DELAY)
            log.error(
                "%s %s after %.1f s; restarting in %.0f s. Its last lines:\n%s",
                *(self.name, outcome, lived, delay, "\n".join(self.tail)),
            )
            if self._stopping.wait(delay):
                return

    def _run_once(self) -> str:
        """Run the child to its end; how it ended, for the log."""
        try:
            process = self._spawn()
        except OSError as exc:  # retried like a crash: the operator may install it
            return f"could not start ({exc.strerror}: {exc.filename})"
        if process is None:
            return "not started: stopping"
        if process.stderr is not None:
            for line in process.stderr:
                self.tail.append(line.rstrip("\n"))
                self.on_line(process.pid, line.rstrip("\n"))
            process.stderr.close()
        process.wait()
        return f"exited with status {process.returncode}"

    def _spawn(self) -> subprocess.Popen[str] | None:
        """A new child, unless ``stop()`` came first (checked under the lock it takes)."""
        with self._lock:
            if self._stopping.is_set():
                return None
            self._process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                errors="replace",
                env=self.env,
            )
            return self._process

    def _log_line(self, _pid: int, line: str) -> None:
        log.info("%s: %s", self.name, line)


def die_with(parent: int, signum: int = signal.SIGTERM) -> None:
    """Have this process get ``signum`` when ``parent`` dies, however it dies
    (``PR_SET_PDEATHSIG``): a killed master must not leave its workers holding a port."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
        log.warning("pid %d cannot follow its parent: errno %d", os.getpid(), ctypes.get_errno())
    if os.getppid() != parent:  # it died before the line above
        os.kill(os.getpid(), signum)
