"""What a scrape answers, at the API's ``/metrics`` (with a token) and on ``metrics_bind``
(without one, ``bakery metrics``).

A scrape shows every process's counters and histograms (read from the metrics directory,
or this process's own when it counts in memory), the collectors given (the fleet's
gauges, from the database), and every declared family nothing counted in yet: its help
and type, and zero where it has no labels, so a dashboard finds each name from the start.
The format is Prometheus text unless the scraper asks for OpenMetrics (``Accept``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from ..signals import stop_event
from .directory import current_directory
from .family import DECLARED, IN_MEMORY

log = logging.getLogger(__name__)


class Scrape:
    """One collector for everything a scrape shows (see the module's docstring)."""

    def __init__(self, collectors: Sequence[Collector] = ()) -> None:
        self.collectors = list(collectors)

    def collect(self) -> Iterable[Metric]:
        shown = set()
        for collector in [_counted(), *self.collectors]:
            for family in collector.collect():
                shown.add(family.name)
                yield family
        for declared in DECLARED:
            if declared.family_name not in shown:
                yield declared.empty()


def _counted() -> Collector:
    """Every process's counts when this one counts in a directory, else its own."""
    directory = current_directory()
    if directory is None:
        return IN_MEMORY
    merged: Callable[..., Collector] = MultiProcessCollector  # untyped in prometheus-client
    return merged(None, path=str(directory))


def exposition(accept: str | None, collectors: Sequence[Collector] = ()) -> tuple[bytes, str]:
    """The scrape's body and its Content-Type, in the format ``accept`` asks for."""
    encode, content_type = choose_encoder(accept or "")
    return encode(Scrape(collectors)), content_type


class MetricsServer:
    """``/metrics`` without a token on ``address``, for a monitoring network: prometheus-
    client's own threaded server over a ``Scrape``. ``start()`` returns once it listens."""

    def __init__(self, address: tuple[str, int], collectors: Sequence[Collector] = ()) -> None:
        self.address = address
        self.scrape = Scrape(collectors)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port it listens on (the real one when asked for port 0)."""
        assert self._server is not None  # start() made it
        return self._server.server_port

    def start(self) -> MetricsServer:
        host, port = self.address
        self._server, self._thread = start_http_server(port, host, self.scrape)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()


def run_metrics_server(address: tuple[str, int], collectors: Sequence[Collector] = ()) -> None:
    """Serve until SIGTERM or SIGINT."""
    done = stop_event()
    server = MetricsServer(address, collectors).start()
    log.info("metrics on %s:%d", address[0], server.port)
    try:
        done.wait()
    finally:
        server.stop()
