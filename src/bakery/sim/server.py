"""A real Bakery server (``bakery serve``: gunicorn, its workers and the netboot
child) in a subprocess: what the demo runs and the end-to-end tests talk to."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import requests

from .wait import wait_until


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return cast(int, probe.getsockname()[1])


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port nothing is bound to right now (for a TFTP server)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((host, 0))
        return cast(int, probe.getsockname()[1])


def accepts_connections(address: tuple[str, int]) -> bool:
    """Whether a TCP server listens at ``address`` yet."""
    try:
        socket.create_connection(address, timeout=1).close()
        return True
    except OSError:
        return False


def udp_bound(port: int) -> bool:
    """Whether a UDP socket of this network namespace is bound to ``port`` (a receiver
    that never answers cannot be asked)."""
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        if any(int(line.split()[1].rsplit(":", 1)[1], 16) == port for line in lines):
            return True
    return False


class BakeryProcess:
    """Start, SIGKILL and restart ``bakery serve`` on one config file.

    The config is written to ``workdir/bakery.json`` and handed over through
    ``BAKERY_CONFIG`` with every other ``BAKERY_*`` variable removed, so the server
    runs on exactly these settings whatever the caller's environment holds."""

    def __init__(
        self,
        config: dict[str, Any],
        workdir: Path,
        port: int | None = None,
        bind_host: str = "127.0.0.1",
    ) -> None:
        self.port = port or free_port(bind_host)
        scheme = "https" if config.get("tls_cert_file") else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        #: What requests should verify the server's certificate with.
        self.verify: str | bool = config.get("tls_cert_file") or True
        self.config_file = workdir / "bakery.json"
        self.config_file.write_text(json.dumps({**config, "bind": f"{bind_host}:{self.port}"}))
        self.log_file = workdir / "server.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.root = Path(config["root"])

    def start(self, timeout: float = 60.0) -> BakeryProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BAKERY_")}
        env["BAKERY_CONFIG"] = str(self.config_file)
        log = open(self.log_file, "ab")
        self.process = subprocess.Popen(
            [str(Path(sys.executable).with_name("bakery")), "serve"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        wait_until(self._healthy, timeout, what=f"bakery serve on {self.url} (log {self.log_file})")
        return self

    def _healthy(self) -> bool:
        assert self.process is not None  # start() made it before waiting on this
        if self.process.poll() is not None:
            raise RuntimeError(f"bakery serve exited:\n{self.log_file.read_text()[-4000:]}")
        try:
            health = requests.get(f"{self.url}/api/v1/health", timeout=2, verify=self.verify)
            return health.status_code == 200
        except requests.ConnectionError:
            return False

    @property
    def token(self) -> str:
        return (self.root / "admin-token").read_text().strip()

    def session(self) -> requests.Session:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {self.token}"
        session.verify = self.verify
        session.trust_env = False  # else REQUESTS_CA_BUNDLE overrides ``verify``
        return session

    def kill(self) -> None:
        """SIGKILL the whole process group: master and workers die mid-request."""
        self._signal_group(signal.SIGKILL)
        if self.process:
            self.process.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM the group (workers too, even if the master already died), then
        SIGKILL whatever is left."""
        self._signal_group(signal.SIGTERM)
        if self.process and self.process.poll() is None:
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        self._signal_group(signal.SIGKILL)

    def _signal_group(self, signum: int) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signum)
        except ProcessLookupError:
            pass
