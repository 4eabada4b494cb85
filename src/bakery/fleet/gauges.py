"""The fleet's gauges, read from the database at each scrape: Pis by state, live bakes by
state, baked Pis by boot status, and the slowest boot among those up.

They are state, not counts: a process keeping them would be wrong as soon as another
process (a gunicorn worker, the TFTP server, another host on the same PostgreSQL) moved a
Pi. So no process keeps them; whichever process answers a scrape asks the database."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from prometheus_client.metrics_core import Metric

from ..metrics.catalogue import BOOTS, LIVE_BAKES, PIS, SLOWEST_BOOT
from ..models import LIVE_BAKE_STATES, Bake, Pi, PiState, database, utcnow
from .boots import BOOTING, STALLED, UP, boot_status
from .queries import count_by


class FleetGauges:
    """A prometheus-client collector. It uses the calling thread's database connection,
    opening one (and closing it after) if the thread has none."""

    def __init__(self, boot_deadline: float) -> None:
        self.boot_deadline = boot_deadline

    def collect(self) -> Iterable[Metric]:
        opened = database.connect(reuse_if_open=True)
        try:
            return [*self._states(), *self._boots()]
        finally:
            if opened:
                database.close()

    def _states(self) -> list[Metric]:
        pis = count_by(Pi, Pi.state)
        bakes = count_by(Bake, Bake.state, Bake.state.in_(LIVE_BAKE_STATES))
        return [
            PIS.family(((state.value,), pis[state.value]) for state in PiState),
            LIVE_BAKES.family(((state,), bakes[state]) for state in LIVE_BAKE_STATES),
        ]

    def _boots(self) -> list[Metric]:
        now = utcnow()
        statuses: Counter[str] = Counter()
        slowest: float | None = None
        for pi in Pi.select(Pi.state, Pi.powered_on_at, Pi.up_at).where(
            Pi.state == PiState.BAKED.value
        ):
            status = boot_status(pi, self.boot_deadline, now)
            if status is None:
                continue
            statuses[status] += 1
            if status == UP:
                assert pi.up_at is not None and pi.powered_on_at is not None  # it is up
                seconds = (pi.up_at - pi.powered_on_at).total_seconds()
                slowest = seconds if slowest is None else max(slowest, seconds)
        return [
            BOOTS.family(((status,), statuses[status]) for status in (BOOTING, UP, STALLED)),
            SLOWEST_BOOT.family([] if slowest is None else [((), slowest)]),
        ]
