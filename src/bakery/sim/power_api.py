"""The simulator's relay-board-like HTTP API: how Bakery powers simulated Pis.

Bakery's ``webhook`` driver switches a Pi with ``POST /pis/<serial>/on`` and
``/off`` and reads ``GET /pis/<serial>``, whose body carries ``"state": "on"`` or
``"off"`` (what the driver's default regexes look for) beside ``"boot"``, the boot
state. ``GET /pis`` lists every Pi and ``GET /pis/<serial>/timeline`` tells one
Pi's boot step by step: the simulator's rainbow screen.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, cast

from .simulator import Simulator, UnknownPi

if TYPE_CHECKING:

    class _SimServer(ThreadingHTTPServer):
        """What PowerApi makes of its server: one that carries the simulator."""

        simulator: Simulator


log = logging.getLogger(__name__)

PI_PATH_RE = re.compile(r"^/pis/(?P<serial>[0-9a-f]{8})(?:/(?P<action>on|off|timeline))?$")


def power_settings(url: str, serial: str) -> dict[str, Any]:
    """The ``webhook`` power settings that switch ``serial`` through the API at ``url``."""
    base = f"{url.rstrip('/')}/pis/{serial}"
    return {"on_url": f"{base}/on", "off_url": f"{base}/off", "status_url": base}


class PowerApi:
    """The HTTP server, on its own thread: ``start()``, ``url``, ``stop()``."""

    def __init__(self, simulator: Simulator, host: str = "127.0.0.1", port: int = 0) -> None:
        self.simulator = simulator
        # (_SimServer: the simulator is set on it right below)
        self.server = cast("_SimServer", ThreadingHTTPServer((host, port), _Handler))
        self.server.daemon_threads = True
        self.server.simulator = simulator
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="sim-power-api", daemon=True
        )

    @property
    def url(self) -> str:
        # server_bind stored getsockname(): a str host for an AF_INET server
        host, port = cast("tuple[str, int]", self.server.server_address[:2])
        return f"http://{host}:{port}"

    def start(self) -> PowerApi:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()


class _Handler(BaseHTTPRequestHandler):
    server: _SimServer
    server_version = "bakery-sim/1"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        simulator: Simulator = self.server.simulator
        if self.path == "/pis":
            self._answer(200, {"pis": simulator.statuses()})
            return
        match = PI_PATH_RE.match(self.path)
        if match is None or match["action"] in ("on", "off"):
            self._answer(404, {"error": f"no such resource {self.path}"})
            return
        if match["action"] == "timeline":
            self._with_pi(lambda: {"timeline": simulator.timeline(match["serial"])})
            return
        self._with_pi(lambda: simulator.status(match["serial"]))

    def do_POST(self) -> None:  # noqa: N802
        simulator: Simulator = self.server.simulator
        match = PI_PATH_RE.match(self.path)
        if match is None or match["action"] not in ("on", "off"):
            self._answer(404, {"error": f"no such switch {self.path}"})
            return
        switch = simulator.power_on if match["action"] == "on" else simulator.power_off
        self._with_pi(lambda: switch(match["serial"]))

    def _with_pi(self, answer: Callable[[], dict[str, Any]]) -> None:
        try:
            self._answer(200, answer())
        except UnknownPi as exc:
            self._answer(404, {"error": f"no simulated Pi {exc.args[0]}"})

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("power API: " + format, *args)
