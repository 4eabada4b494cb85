"""The timeline: every state move, bake step, power call and boot step of a Pi is an
event with a timestamp."""

from __future__ import annotations

from typing import Any

from ..models import Event, Pi, utcnow
from .actors import actor_name


def record(
    pi: Pi | int | None, kind: str, message: str, bake_id: str | None = None, **data: Any
) -> None:
    """Add an event to ``pi``'s timeline (or to none, for fleet-wide events), naming the
    token whose request did it."""
    Event.create(pi=pi, kind=kind, message=message, bake_id=bake_id, data=data, actor=actor_name())


def record_power(serial: str, message: str, data: dict[str, Any]) -> None:
    """The power controller's report of one attempt, on the Pi it switched; a power-on
    that worked begins a boot (``Pi.powered_on_at``)."""
    pi = Pi.get_or_none(Pi.serial == serial)
    record(pi, "power", message, pi.bake_id if pi else None, **data)
    if pi is not None and data.get("action") in ("on", "cycle") and data.get("outcome") == "ok":
        Pi.update(powered_on_at=utcnow()).where(Pi.id == pi.id).execute()


def timeline(
    pi: Pi, *, bake_id: str | None = None, limit: int = 200, after: int | None = None
) -> list[Event]:
    """The newest ``limit`` events of ``pi`` (of one bake if ``bake_id``; newer than
    event ``after`` if given), oldest first, each with its ``since_power_on``."""
    query = Event.select().where(Event.pi == pi)
    if bake_id is not None:
        query = query.where(Event.bake_id == bake_id)
    if after is not None:
        query = query.where(Event.id > after)
    found = list(reversed(list(query.order_by(Event.id.desc()).limit(limit))))
    _mark_boot_times(pi, found)
    return found


#: Power events looked back through for the power-on a timeline's first event belongs to.
POWER_EVENTS_SCANNED = 50


def is_power_on(event: Event) -> bool:
    """A boot begins with a power-on that worked (a power cycle too)."""
    data = event.data or {}
    return (
        event.kind == "power"
        and data.get("action") in ("on", "cycle")
        and data.get("outcome") == "ok"
    )


def _mark_boot_times(pi: Pi, found: list[Event]) -> None:
    """Set each event's ``since_power_on``: seconds since the latest power-on at or before
    it, so a boot reads as one (None before the Pi was ever powered on)."""
    if not found:
        return
    earlier = (
        Event.select()
        .where(Event.pi == pi, Event.kind == "power", Event.id < found[0].id)
        .order_by(Event.id.desc())
        .limit(POWER_EVENTS_SCANNED)
    )
    start = next((event for event in earlier if is_power_on(event)), None)
    for event in found:
        if is_power_on(event):
            start = event
        since = (event.created_at - start.created_at).total_seconds() if start else None
        event.since_power_on = since
