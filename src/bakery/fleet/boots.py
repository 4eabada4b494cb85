"""How far a baked Pi's boot got: powered on, userspace up (its boot report says so), or
stalled (past ``boot_deadline`` without a word). The boot report, a unit Bakery installs
in every root, posts to the metadata service at boot and every minute after; a checker
in the netboot process finds the boots past their deadline."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from .. import metrics
from ..errors import NotFound
from ..models import Pi, PiState, database, utcnow
from . import events
from .bakefiles import caller_bake
from .context import FleetContext

UP, BOOTING, STALLED = "up", "booting", "stalled"


def report_userspace(ip: str, secret: str) -> dict[str, Any]:
    """The boot report of the Pi at ``ip`` showing its bake's secret: the first after a
    power-on puts "userspace up" with the boot's duration on the timeline; each one keeps
    the Pi's ``last_seen``. NotFound for anything that is not a live bake's own Pi."""
    caller = caller_bake(ip, secret)
    if caller is None:
        raise NotFound(f"no live bake at {ip}", code="bake_not_found")
    pi, bake = caller
    now = utcnow()
    seconds = 0.0
    with database.atomic():
        Pi.update(last_seen=now).where(Pi.id == pi.id).execute()
        first = _mark_up(pi, now)
        if first:
            assert pi.powered_on_at is not None  # _mark_up checked
            seconds = round((now - pi.powered_on_at).total_seconds(), 2)
            message = f"userspace up {seconds:.2f} s after power-on"
            events.record(pi, "boot", message, bake.id, step="userspace_up", seconds=seconds)
    if first:
        metrics.userspace_up(seconds)  # once the report is stored: a failed one is not a boot
    return {"bake_id": bake.id, "first": first}


def _mark_up(pi: Pi, now: datetime) -> bool:
    """Note the Pi's userspace up in this boot, if nothing did yet: one conditional
    update, so of two reports at once only one is the boot's first."""
    if pi.powered_on_at is None:
        return False
    not_yet = Pi.up_at.is_null() | (Pi.up_at < Pi.powered_on_at)
    marked = Pi.update(up_at=now).where(
        Pi.id == pi.id, Pi.powered_on_at == pi.powered_on_at, not_yet
    )
    return bool(marked.execute())


def boot_status(pi: Pi, deadline: float, now: datetime | None = None) -> str | None:
    """up, booting or stalled for a baked Pi powered on since its bake; None otherwise."""
    if pi.state != PiState.BAKED.value or pi.powered_on_at is None:
        return None
    if pi.up_at is not None and pi.up_at >= pi.powered_on_at:
        return UP
    late = (now or utcnow()) - pi.powered_on_at > timedelta(seconds=deadline)
    return STALLED if late else BOOTING


def check_stalled(ctx: FleetContext) -> int:
    """Put a "stalled" event on the timeline of each baked Pi whose boot passed the
    deadline without its userspace saying it is up, once per boot; how many there were."""
    deadline = ctx.settings.boot_deadline
    cutoff = utcnow() - timedelta(seconds=deadline)
    candidates = Pi.select().where(
        Pi.state == PiState.BAKED.value,
        Pi.powered_on_at.is_null(False),
        Pi.powered_on_at < cutoff,
    )
    found = 0
    for pi in candidates:
        started = pi.powered_on_at
        if started is None or boot_status(pi, deadline) != STALLED:
            continue
        if pi.stalled_at is not None and pi.stalled_at >= started:
            continue  # this boot was reported already
        marked = Pi.update(stalled_at=utcnow()).where(Pi.id == pi.id, Pi.powered_on_at == started)
        if marked.execute():
            message = f"stalled: userspace not up {deadline:.0f} s after power-on"
            events.record(pi, "boot", message, pi.bake_id, step="stalled", deadline=deadline)
            found += 1
    return found
