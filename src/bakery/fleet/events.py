"""The timeline: every state move, bake step, power call and boot step of a Pi is an
event with a timestamp."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
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
    earlier = _power_events(pi, before=found[0].id)
    start = next((event for event in earlier if is_power_on(event)), None)
    for event in found:
        if is_power_on(event):
            start = event
        since = (event.created_at - start.created_at).total_seconds() if start else None
        event.since_power_on = since


# -- boots, phase by phase ------------------------------------------------------------------

#: What a boot's time is spent on, in order: the bootloader until its first request, the
#: boot files (TFTP or HTTP), then the kernel and userspace until the boot report.
BOOT_PHASES = ("bootloader", "boot files", "kernel and userspace")
#: Boot steps that are the bootloader fetching a file.
FILE_STEPS = ("first_request", "served", "missing", "failed")
#: Boot steps that end a boot, and the outcome each gives it.
END_STEPS = {"userspace_up": "up", "stalled": "stalled"}
#: The one phase of a boot whose files are not on its timeline.
WHOLE_BOOT = "whole boot"


@dataclass
class BootRecord:
    """One boot of a Pi: its power-on, the first and last file its bootloader fetched,
    and its end. ``outcome``: up, stalled, booting (still going) or cut (powered on
    again, or off, before it was up)."""

    started_at: datetime
    first_file_at: datetime | None = None
    last_file_at: datetime | None = None
    ended_at: datetime | None = None
    outcome: str = "booting"

    @property
    def phases(self) -> list[tuple[str, float]]:
        """(phase, seconds) for each of ``BOOT_PHASES`` the boot went through; one
        ``WHOLE_BOOT`` span for a boot that ended with no file on its timeline."""
        if self.first_file_at is None and self.ended_at is not None:
            return [(WHOLE_BOOT, round((self.ended_at - self.started_at).total_seconds(), 2))]
        points = (self.started_at, self.first_file_at, self.last_file_at, self.ended_at)
        return [
            (name, round((later - earlier).total_seconds(), 2))
            for name, earlier, later in zip(BOOT_PHASES, points, points[1:], strict=False)
            if earlier is not None and later is not None
        ]

    @property
    def seconds(self) -> float:
        return sum(seconds for _, seconds in self.phases)

    def note(self, event: Event) -> None:
        """Take in one boot event of this boot. Nothing changes a boot that is up or cut;
        a stalled boot whose userspace comes up after all is up (late)."""
        step = (event.data or {}).get("step")
        if self.outcome == "stalled" and step == "userspace_up":
            self.ended_at, self.outcome = event.created_at, "up"
        if self.outcome != "booting":
            return
        if step in FILE_STEPS:
            self.first_file_at = self.first_file_at or event.created_at
            self.last_file_at = event.created_at
        elif step in END_STEPS:
            self.ended_at = event.created_at
            self.outcome = END_STEPS[step]


def boot_history(pi: Pi, boots: int = 10) -> list[BootRecord]:
    """The Pi's last ``boots`` boots, oldest first, each with its phases."""
    power_ons = [event for event in _power_events(pi) if is_power_on(event)][:boots]
    if not power_ons:
        return []
    steps = (
        Event.select()
        .where(Event.pi == pi, Event.id >= power_ons[-1].id, Event.kind.in_(["power", "boot"]))
        .order_by(Event.id)
    )
    records: list[BootRecord] = []
    for event in steps:
        if event.kind == "boot":
            if records:
                records[-1].note(event)
            continue
        if records and records[-1].outcome == "booting" and _ends_power(event):
            records[-1].outcome = "cut"
        if is_power_on(event):
            records.append(BootRecord(event.created_at))
    return records


def _power_events(pi: Pi, before: int | None = None) -> list[Event]:
    """The Pi's newest ``POWER_EVENTS_SCANNED`` power events (older than ``before``)."""
    query = Event.select().where(Event.pi == pi, Event.kind == "power")
    if before is not None:
        query = query.where(Event.id < before)
    return list(query.order_by(Event.id.desc()).limit(POWER_EVENTS_SCANNED))


def _ends_power(event: Event) -> bool:
    """A power-on or power-off that worked: the boot before it is over."""
    data = event.data or {}
    return data.get("action") in ("on", "off", "cycle") and data.get("outcome") == "ok"
