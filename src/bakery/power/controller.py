"""Power policy, in one place, for every driver.

- **Retries** only for errors of a retryable type (``retryable``, ``connection``,
  ``timeout``), up to ``power_retries`` attempts, waiting ``backoff`` × 1, 2, 4 … seconds
  (capped) between them. A fatal or auth error is never repeated: toggling a relay
  again or locking an account does not help.
- **One call at a time per power device**, across processes (gunicorn workers): an
  ``flock`` on ``locks/power-<sha1(device key)>.lock``. The lock is released while
  backing off, so other Pis on the board are not held up by one failing call.
- **Power-ons spaced fleet-wide** by ``power_on_gap`` seconds against Pi DHCP boot storms
  (pi-netboot §7): ``on`` and ``cycle`` take ``locks/power-on-gap.lock``, wait until
  ``power_on_gap`` seconds have passed since the previous power-on *finished* (its end
  time is in ``locks/power-on-last``), and hold the lock during the call. Measuring from
  the end makes the gap hold whatever the driver's latency. Drivers that switch nothing
  (``manual``) are exempt: the operator paces those. Lock order is always device, then
  gap, so the two locks cannot deadlock.
- **An event per attempt** through ``record(serial, message, data)`` with action, driver,
  attempt, outcome, state, error type, duration and the settings used — with secrets
  (keys containing token/password/secret/key, every header value) replaced by ``***``,
  also wherever their values appear inside messages; and a count per attempt (and per
  failure, by error type) for the metrics.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, cast

from bakery import fsutil, metrics
from bakery.config import Settings
from bakery.power.base import (
    POWER_ACTIONS,
    PowerAction,
    PowerDriver,
    PowerError,
    PowerResult,
    PowerTarget,
    driver_class,
)
from bakery.redaction import redacted, scrub, secret_values

logger = logging.getLogger(__name__)

PowerEventSink = Callable[[str, str, dict[str, Any]], None]

POWERING_ON = frozenset({"on", "cycle"})
GAP_LOCK = "power-on-gap.lock"
GAP_STAMP = "power-on-last"


class PowerController:
    """Runs power actions through drivers with the policy above.

    ``backoff`` is the first wait between attempts in seconds (doubling each time, at
    most ``backoff_cap``); tests make it small rather than waiting real seconds.
    """

    def __init__(
        self,
        config: Settings,
        record: PowerEventSink | None = None,
        *,
        backoff: float = 1.0,
        backoff_cap: float = 30.0,
    ):
        self.config = config
        self.record = record
        self.backoff = backoff
        self.backoff_cap = backoff_cap
        self._drivers: dict[str, PowerDriver] = {}

    def run(self, driver_name: str, target: PowerTarget, action: PowerAction) -> PowerResult:
        """Do ``action`` on ``target``; raise the last ``PowerError`` if every attempt failed.

        ``ValueError`` for an unknown driver or action: those are caller bugs, not
        power failures."""
        if action not in POWER_ACTIONS:
            raise ValueError(f"unknown power action {action!r}")
        driver = self._driver(driver_name)
        attempt = 1
        while True:
            try:
                return self._attempt(driver, target, action, attempt)
            except PowerError as error:
                if not error.retryable or attempt >= self.config.power_retries:
                    raise
            time.sleep(self.backoff_delay(attempt))
            attempt += 1

    def backoff_delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        # attempt is 1-based: the exponent is never negative, so the power is an int
        return min(self.backoff * cast(int, 2 ** (attempt - 1)), self.backoff_cap)

    def _driver(self, name: str) -> PowerDriver:
        if name not in self._drivers:
            self._drivers[name] = driver_class(name)(self.config)
        return self._drivers[name]

    def _attempt(
        self, driver: PowerDriver, target: PowerTarget, action: str, attempt: int
    ) -> PowerResult:
        """One try, under the device lock, recorded whatever happens."""
        report = _Report(self, driver, target, action, attempt)
        try:
            with self._exclusive(_device_lock_name(driver.device_key(target))):
                result = self._act(driver, target, action, report)
        except PowerError as error:
            report.failed(error)
            raise
        except Exception as exc:
            logger.exception("power driver %s crashed on Pi %s", driver.name, target.serial)
            failure = PowerError("fatal", f"driver {driver.name} failed: {type(exc).__name__}")
            report.failed(failure)
            raise failure from exc
        report.succeeded(result)
        return result

    def _act(
        self, driver: PowerDriver, target: PowerTarget, action: str, report: _Report
    ) -> PowerResult:
        call: Callable[[PowerTarget], PowerResult] = getattr(driver, action)
        if action not in POWERING_ON or not driver.switches_power:
            report.started()
            return call(target)
        with self._power_on_slot():
            report.started()
            return call(target)

    @contextmanager
    def _power_on_slot(self) -> Iterator[None]:
        """Hold the fleet-wide power-on turn: wait out the gap, then stamp the end time."""
        stamp = self.config.path("locks", GAP_STAMP)
        with self._exclusive(GAP_LOCK):
            wait = _seconds_left(stamp, self.config.power_on_gap)
            if wait > 0:
                time.sleep(wait)
            try:
                yield
            finally:
                stamp.write_text(repr(time.time()))

    def _exclusive(self, lock_name: str) -> AbstractContextManager[None]:
        """An flock shared by every process and thread using this data directory."""
        return fsutil.locked(self.config.path("locks", lock_name))


def _device_lock_name(device_key: str) -> str:
    return f"power-{hashlib.sha1(device_key.encode()).hexdigest()}.lock"


def _seconds_left(stamp: Path, gap: float) -> float:
    """How long until ``gap`` seconds after the last power-on; never more than ``gap``,
    so a stamp from the future (clock stepped back) cannot stall power-ons."""
    try:
        last = float(stamp.read_text())
    except (OSError, ValueError):
        return 0.0
    return min(gap, last + gap - time.time())


class _Report:
    """Times one attempt and records it as an event and a log line, secrets scrubbed."""

    def __init__(
        self,
        controller: PowerController,
        driver: PowerDriver,
        target: PowerTarget,
        action: str,
        attempt: int,
    ):
        self.controller = controller
        self.target = target
        self.secrets = secret_values(target.settings)
        self.created = self.begun = time.monotonic()
        self.data: dict[str, Any] = {
            "action": action,
            "driver": driver.name,
            "attempt": attempt,
            "attempts": controller.config.power_retries,
            "settings": redacted(target.settings),
        }

    def started(self) -> None:
        """The locks are held and the gap waited out: what came before was queueing
        (``waited_s``), what follows is the device's own time (``duration_s``)."""
        self.begun = time.monotonic()

    def succeeded(self, result: PowerResult) -> None:
        detail = f"ok, state {result.state}" + (f": {result.message}" if result.message else "")
        self._emit(logging.INFO, detail, outcome="ok", state=result.state, error_type=None)

    def failed(self, error: PowerError) -> None:
        detail = f"{error.type} error: {error.message}"
        self._emit(logging.WARNING, detail, outcome="error", state=None, error_type=error.type)

    def _emit(self, level: int, detail: str, **fields: Any) -> None:
        now = time.monotonic()
        data = self.data | fields
        data["waited_s"] = round(self.begun - self.created, 3)
        data["duration_s"] = round(now - self.begun, 3)
        message = self._scrub(
            f"power {data['action']} via {data['driver']} "
            f"(attempt {data['attempt']}/{data['attempts']}): {detail}"
        )
        logger.log(level, "Pi %s: %s", self.target.serial, message)
        metrics.power_called(data["driver"], data["action"], data["error_type"])
        if self.controller.record:
            self.controller.record(self.target.serial, message, data)

    def _scrub(self, value: Any) -> Any:
        return scrub(value, self.secrets)
