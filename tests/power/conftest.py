"""Fixtures for power tests: settings in a temporary data directory, a recording event
sink and a relay board on loopback."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from bakery.config import Settings
from tests.power.support import PPIS


@pytest.fixture
def ppi_dir(tmp_path: Path) -> Path:
    """The operator's PPI directory: the test PPIs of ``ppis/``, where configs go too."""
    directory = tmp_path / "ppi"
    directory.mkdir()
    for script in PPIS.glob("*.py"):
        (directory / script.name).symlink_to(script)
    return directory


@pytest.fixture
def settings(tmp_path: Path, ppi_dir: Path) -> Settings:
    return Settings(
        root=tmp_path / "data",
        power_timeout=10.0,
        power_retries=3,
        power_on_gap=0.0,
        ppi_dir=str(ppi_dir),
        webhook_hosts=["127.0.0.1", "relay", "relay-1"],
    )


@dataclass
class Events:
    """The fleet's event sink, kept in memory."""

    recorded: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def __call__(self, serial: str, message: str, data: dict[str, Any]) -> None:
        self.recorded.append((serial, message, data))

    @property
    def data(self) -> list[dict[str, Any]]:
        return [data for _, _, data in self.recorded]


@pytest.fixture
def events() -> Events:
    return Events()


@dataclass
class RelayBoard:
    """A simpleweb-style relay board: ``/relay/<n>/on|off`` switch, ``/relay/<n>`` reports,
    for the relays in ``relays``; anything else is 404.

    ``failures`` makes the next N requests answer 500; ``token`` makes every request
    without ``Authorization: Bearer <token>`` answer 401."""

    url: str = ""
    states: dict[str, str] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    relays: tuple[str, ...] = ("1", "2")
    failures: int = 0
    token: str = ""

    def handle(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, str]:
        self.requests.append({"method": method, "path": path, "headers": headers})
        if self.failures:
            self.failures -= 1
            return 500, "relay busy"
        if self.token and headers.get("Authorization") != f"Bearer {self.token}":
            return 401, "unauthorised"
        parts = path.split("?")[0].strip("/").split("/")
        if len(parts) < 2 or parts[0] != "relay" or parts[1] not in self.relays:
            return 404, "no such relay"
        if len(parts) == 3 and parts[2] in ("on", "off"):
            self.states[parts[1]] = parts[2]
            return 200, "ok"
        if len(parts) == 2:
            return 200, json.dumps({"relay": parts[1], "state": self.states.get(parts[1], "off")})
        return 404, "no such relay"


@pytest.fixture
def relay() -> Iterator[RelayBoard]:
    board = RelayBoard()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            status, body = board.handle(self.command, self.path, dict(self.headers))
            payload = body.encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _answer

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    board.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield board
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
