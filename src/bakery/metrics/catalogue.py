"""Every metric Bakery exports, and the one call each layer makes to count in it.

Names follow Prometheus' conventions: ``bakery_`` first, base units (``_seconds``,
``_bytes``), ``_total`` on counters; labels take a handful of values each (a file's kind,
a power driver, an API route's rule), never a serial, an address or a bake id. The counters
and histograms are kept by the process that saw the event; the gauges at the end are
computed from the database at each scrape (``fleet.gauges``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from .family import CounterFamily, GaugeFamily, HistogramFamily
from .kinds import file_kind

#: Power-on → userspace up: a simulated Pi alone takes a second, real ones 20-60 s; two
#: seconds apart where most boots end, so a p95 read from them is close to the truth.
BOOT_BUCKETS = (
    *(0.5, 1, 1.5, 2, 3, 4, 5, 6, 8, 10, 12, 14, 16, 18, 20, 22.5, 25, 27.5, 30),
    *(35, 40, 45, 50, 60, 75, 90, 120, 180, 300, 600),
)
#: A bake: a snapshot takes well under a second, a copied root minutes.
BAKE_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300, 600)
#: A bakeform import: upload, checks and extraction of an image of up to tens of GiB.
IMPORT_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600)
#: An API request: most take milliseconds; a bake seconds, an upload minutes.
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

# -- netboot ----------------------------------------------------------------------------

TFTP_TRANSFERS = CounterFamily(
    "bakery_tftp_transfers_total", "TFTP transfers sent in full, by file kind.", ["kind"]
)
TFTP_BYTES = CounterFamily(
    "bakery_tftp_bytes_total", "File bytes of the TFTP transfers sent in full.", ["kind"]
)
TFTP_FAILURES = CounterFamily(
    "bakery_tftp_failures_total",
    "TFTP transfers begun but not finished (no ACK after the retries, a client error, "
    "the client unreachable), by file kind.",
    ["kind"],
)
HTTP_BOOT_DOWNLOADS = CounterFamily(
    "bakery_http_boot_downloads_total", "HTTP boot files sent in full, by file kind.", ["kind"]
)
HTTP_BOOT_BYTES = CounterFamily(
    "bakery_http_boot_bytes_total", "File bytes of the HTTP boot files sent in full.", ["kind"]
)
HTTP_BOOT_FAILURES = CounterFamily(
    "bakery_http_boot_failures_total",
    "HTTP boot files not sent: the boot image could not be made, or the send failed.",
    ["kind"],
)
DHCP_OFFERS = CounterFamily(
    "bakery_dhcp_offers_total", "Proxy DHCP offers dnsmasq sent to Pis (its log says each)."
)

# -- power, bakes, boots, bakeforms -------------------------------------------------------

POWER_CALLS = CounterFamily(
    "bakery_power_calls_total",
    "Power driver calls (each attempt), by driver and action.",
    ["driver", "action"],
)
POWER_FAILURES = CounterFamily(
    "bakery_power_failures_total",
    "Power driver calls that failed, by driver, action and error type.",
    ["driver", "action", "error_type"],
)
BAKES_STARTED = CounterFamily("bakery_bakes_started_total", "Bakes begun: a Pi was claimed.")
BAKES_FAILED = CounterFamily(
    "bakery_bakes_failed_total", "Bakes rolled back, by the step they had reached.", ["step"]
)
BAKE_DURATION = HistogramFamily(
    "bakery_bake_duration_seconds",
    "Bake request → baked (claimed, root cloned and seasoned, exported, powered on), "
    "of the bakes that succeeded.",
    BAKE_BUCKETS,
)
BOOT_DURATION = HistogramFamily(
    "bakery_boot_duration_seconds",
    "Power-on → userspace up (the first boot report after the power-on).",
    BOOT_BUCKETS,
)
IMPORT_DURATION = HistogramFamily(
    "bakery_bakeform_import_duration_seconds",
    "Bakeform imports (upload received, checked and extracted), by outcome (ok, failed).",
    IMPORT_BUCKETS,
    ["outcome"],
)

# -- the API -------------------------------------------------------------------------------

API_REQUESTS = CounterFamily(
    "bakery_api_requests_total",
    "Requests to the API app, by route (its URL rule; unmatched for none), method and status.",
    ["route", "method", "status"],
)
API_DURATION = HistogramFamily(
    "bakery_api_request_duration_seconds",
    "Time the API app took to answer a request, by route and method.",
    REQUEST_BUCKETS,
    ["route", "method"],
)

# -- the fleet, from the database at each scrape --------------------------------------------

PIS = GaugeFamily("bakery_pis", "Pis registered or discovered, by state.", ["state"])
LIVE_BAKES = GaugeFamily("bakery_live_bakes", "Bakes not yet unbaked, by state.", ["state"])
BOOTS = GaugeFamily(
    "bakery_boots", "Baked Pis by how far their boot got: booting, up or stalled.", ["status"]
)
SLOWEST_BOOT = GaugeFamily(
    "bakery_boot_duration_max_seconds",
    "The longest power-on → userspace up among the baked Pis that are up now.",
)


# -- what the layers call ----------------------------------------------------------------


def _file_sent(files: CounterFamily, sent: CounterFamily, name: str, size: int) -> None:
    kind = file_kind(name)
    files.inc(kind)
    sent.inc(kind, amount=size)


def tftp_sent(name: str, size: int) -> None:
    """A TFTP transfer of ``size`` bytes ended with the last ACK."""
    _file_sent(TFTP_TRANSFERS, TFTP_BYTES, name, size)


def tftp_failed(name: str) -> None:
    TFTP_FAILURES.inc(file_kind(name))


def http_boot_sent(name: str, size: int) -> None:
    _file_sent(HTTP_BOOT_DOWNLOADS, HTTP_BOOT_BYTES, name, size)


def http_boot_failed(name: str) -> None:
    HTTP_BOOT_FAILURES.inc(file_kind(name))


def dhcp_offered() -> None:
    DHCP_OFFERS.inc()


def power_called(driver: str, action: str, error_type: str | None) -> None:
    """One attempt of a power action; ``error_type`` None when it worked."""
    POWER_CALLS.inc(driver, action)
    if error_type is not None:
        POWER_FAILURES.inc(driver, action, error_type)


def bake_started() -> None:
    BAKES_STARTED.inc()


def bake_failed(step: str) -> None:
    BAKES_FAILED.inc(step)


def bake_done(seconds: float) -> None:
    BAKE_DURATION.observe(seconds)


def userspace_up(seconds: float) -> None:
    """A Pi's first boot report after its power-on, ``seconds`` after it."""
    BOOT_DURATION.observe(seconds)


@contextmanager
def bakeform_import() -> Iterator[None]:
    """Time the import inside: ``ok`` if it returns, ``failed`` if it raises."""
    started = time.monotonic()
    outcome = "failed"
    try:
        yield
        outcome = "ok"
    finally:
        IMPORT_DURATION.observe(time.monotonic() - started, outcome)


#: Methods counted by name; any other a client makes up (gunicorn takes any 3-20 capitals)
#: is ``other``, or each would be a new series.
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def api_request(route: str, method: str, status: int, seconds: float | None) -> None:
    """One answered request; ``seconds`` None when its start was not seen."""
    method = method if method in HTTP_METHODS else "other"
    API_REQUESTS.inc(route, method, str(status))
    if seconds is not None:
        API_DURATION.observe(seconds, route, method)
