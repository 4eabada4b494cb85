"""The timeline: every state move, bake step, power call and boot step of a Pi is an
event with a timestamp."""

from __future__ import annotations

from typing import Any

from ..models import Event, Pi
from .actors import actor_name


def record(
    pi: Pi | int | None, kind: str, message: str, bake_id: str | None = None, **data: Any
) -> None:
    """Add an event to ``pi``'s timeline (or to none, for fleet-wide events), naming the
    token whose request did it."""
    Event.create(pi=pi, kind=kind, message=message, bake_id=bake_id, data=data, actor=actor_name())


def record_power(serial: str, message: str, data: dict[str, Any]) -> None:
    """The power controller's report of one attempt, on the Pi it switched."""
    pi = Pi.get_or_none(Pi.serial == serial)
    record(pi, "power", message, pi.bake_id if pi else None, **data)


def timeline(pi: Pi, *, bake_id: str | None = None, limit: int = 200) -> list[Event]:
    """The newest ``limit`` events of ``pi`` (of one bake if ``bake_id``), oldest first."""
    query = Event.select().where(Event.pi == pi)
    if bake_id is not None:
        query = query.where(Event.bake_id == bake_id)
    newest = query.order_by(Event.id.desc()).limit(limit)
    return list(reversed(list(newest)))
