"""A metric Bakery exports, declared once: its name, help, labels and buckets.

The prometheus-client object behind a counter or a histogram is made at its first count,
not when it is declared (at import): by then the process has joined its metrics
directory (``directory.use_directory``), so its values go to files every scrape reads.
Gauges that describe the fleet are not counted by any process: they are computed from the
database at each scrape (``GaugeFamily.family``), so they are right whatever process
changed the fleet.

``DECLARED`` lists every family, so a scrape can show each one before its first count
(``Declared.empty``) and a test can hold the names to Prometheus' conventions.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from typing import ClassVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    values,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString

#: This process's own values, when it counts in memory (it joined no directory).
IN_MEMORY = CollectorRegistry(auto_describe=False)
#: Every family, in the order declared.
DECLARED: list[Declared] = []

_lock = threading.Lock()
_in_memory = False
#: A bucket bound as the exposition writes it ("0.5", "1.0"): prometheus-client's own
#: formatting, which it leaves untyped.
_bound_text: Callable[[float], str] = floatToGoString
_no_created_series: Callable[[], None] = disable_created_metrics  # untyped there too


def made_in_memory() -> bool:
    """Whether this process made a counter or histogram before joining a directory."""
    return _in_memory


class Declared:
    """What every family has: a name, a help text and label names (never a serial, an
    address or an id: each label value is a series Prometheus keeps)."""

    kind: ClassVar[str]

    def __init__(self, name: str, documentation: str, labels: Sequence[str] = ()) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = tuple(labels)
        DECLARED.append(self)

    @property
    def family_name(self) -> str:
        """The name collectors give the family (a counter's without ``_total``)."""
        return self.name

    def empty(self) -> Metric:
        """The family before anything was counted in it: zero if it has no labels (nothing
        happened yet), no samples otherwise (no label values are known yet)."""
        raise NotImplementedError


class CounterFamily(Declared):
    kind = "counter"

    def __init__(self, name: str, documentation: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, documentation, labels)
        self._counter: Counter | None = None

    @property
    def family_name(self) -> str:
        return self.name.removesuffix("_total")

    def inc(self, *label_values: str, amount: float = 1.0) -> None:
        counter = self._counter or self._make()
        (counter.labels(*label_values) if label_values else counter).inc(amount)

    def empty(self) -> Metric:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        if not self.labels:
            family.add_metric([], 0.0)
        return family

    def _make(self) -> Counter:
        with _lock:
            if self._counter is None:
                _note_mode()
                self._counter = Counter(
                    self.name, self.documentation, self.labels, registry=IN_MEMORY
                )
            return self._counter


class HistogramFamily(Declared):
    kind = "histogram"

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float],
        labels: Sequence[str] = (),
    ) -> None:
        super().__init__(name, documentation, labels)
        self.buckets = tuple(buckets)
        self._histogram: Histogram | None = None

    def observe(self, value: float, *label_values: str) -> None:
        histogram = self._histogram or self._make()
        (histogram.labels(*label_values) if label_values else histogram).observe(value)

    def empty(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        if not self.labels:
            zeros = [(_bound_text(bound), 0.0) for bound in self.buckets]
            family.add_metric([], [*zeros, ("+Inf", 0.0)], sum_value=0.0)
        return family

    def _make(self) -> Histogram:
        with _lock:
            if self._histogram is None:
                _note_mode()
                self._histogram = Histogram(
                    self.name,
                    self.documentation,
                    self.labels,
                    buckets=self.buckets,
                    registry=IN_MEMORY,
                )
            return self._histogram


class GaugeFamily(Declared):
    """A gauge computed at each scrape (from the database), never kept by a process."""

    kind = "gauge"

    def family(self, samples: Iterable[tuple[Sequence[str], float]]) -> GaugeMetricFamily:
        gauge = GaugeMetricFamily(self.name, self.documentation, labels=self.labels)
        for label_values, value in samples:
            gauge.add_metric(list(label_values), value)
        return gauge

    def empty(self) -> Metric:
        return self.family([])


def _note_mode() -> None:
    """Before a family is made: remember whether it counts in memory, and have no
    ``_created`` series (multiprocess mode has none: the page is the same either way)."""
    global _in_memory
    if not getattr(values.ValueClass, "_multiprocess", False):
        _in_memory = True
    _no_created_series()
