"""Finding things: one Pi, bake, bakeform, disk or snapshot by its key (a NotFound that
names what is missing), and the lists the API and the CLI show, each one query, whatever
the length of the list."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TypeVar, cast

import peewee as pw

from .. import identifiers
from ..errors import NotFound
from ..models import Bake, Bakeform, ConsoleLine, Disk, Event, Pi, PiState, Snapshot
from . import console as console_lines
from . import events
from .actors import owner_scope
from .states import LIVE_BAKE_STATES

M = TypeVar("M", Bake, Disk, Snapshot)


def check_database() -> None:
    Pi.select().limit(1).count()


def get_pi(serial: str) -> Pi:
    try:
        serial = identifiers.serial(serial)
    except identifiers.InvalidIdentifier as exc:
        raise NotFound(str(exc), code="pi_not_found") from None
    pi = Pi.get_or_none(Pi.serial == serial)
    if pi is None:
        raise NotFound(f"no Pi with serial {serial}", code="pi_not_found")
    return pi


def _by_id(model: type[M], key: str, what: str) -> M:
    """The row of ``model`` with id ``key`` (32 hex digits, or it cannot exist), if the
    current actor may see it: another owner's is missing to it, as if it did not exist."""
    row = model.get_or_none(model.id == key) if identifiers.ID_RE.match(key) else None
    scope = owner_scope()
    if row is None or (scope is not None and row.owner != scope):
        raise NotFound(f"no {what} {key!r}", code=f"{what}_not_found")
    return row


def _scoped(query: pw.ModelSelect[M], model: type[M]) -> pw.ModelSelect[M]:
    """``query`` narrowed to the current actor's owner, where it has one."""
    scope = owner_scope()
    return query if scope is None else query.where(model.owner == scope)


def get_bake(bake_id: str) -> Bake:
    return _by_id(Bake, bake_id, "bake")


def get_live_bake(bake_id: str) -> Bake:
    bake = get_bake(bake_id)
    if bake.state not in LIVE_BAKE_STATES:
        raise NotFound(f"bake {bake_id} was unbaked", code="bake_not_found")
    return bake


def get_bakeform(name: str) -> Bakeform:
    bakeform = Bakeform.get_or_none(Bakeform.name == name)
    if bakeform is None:
        raise NotFound(f"no bakeform named {name!r}", code="bakeform_not_found")
    return bakeform


def get_disk(disk_id: str) -> Disk:
    return _by_id(Disk, disk_id, "disk")


def get_snapshot(snapshot_id: str) -> Snapshot:
    return _by_id(Snapshot, snapshot_id, "snapshot")


def live_bake_of(pi: Pi) -> Bake | None:
    bake = Bake.get_or_none(Bake.id == pi.bake_id) if pi.bake_id else None
    return bake if bake is not None and bake.state in LIVE_BAKE_STATES else None


def with_labels(pis: Iterable[Pi], labels: Sequence[str]) -> list[Pi]:
    """The Pis that carry every one of ``labels`` (the label filter, for lists and bakes)."""
    wanted = set(labels)
    return [pi for pi in pis if wanted <= set(pi.labels or [])]


def list_pis(state: str | None = None, labels: Sequence[str] = ()) -> list[Pi]:
    query = Pi.select().order_by(Pi.serial)
    if state is not None:
        query = query.where(Pi.state == state)
    return with_labels(query, labels)


def available_pis(
    serial: str | None, labels: Sequence[str], model: str | None, host: str
) -> list[Pi]:
    """The Pis of ``host`` (or of none yet) a bake may claim, in random order: concurrent
    bakes try different Pis first and rarely collide."""
    query = Pi.select().where(
        Pi.state == PiState.AVAILABLE.value, (Pi.host == host) | Pi.host.is_null()
    )
    if serial:
        query = query.where(Pi.serial == identifiers.serial(serial))
    if model:
        query = query.where(Pi.model == model)
    found = with_labels(query, labels)
    random.shuffle(found)
    return found


def list_bakes(*, include_finished: bool = False, serial: str | None = None) -> list[Bake]:
    """Bakes, oldest first, each with its Pi and its disks loaded (two queries in all)."""
    query = _scoped(Bake.select(Bake, Pi).join(Pi).order_by(Bake.created_at), Bake)
    if not include_finished:
        query = query.where(Bake.state.in_(LIVE_BAKE_STATES))
    if serial:
        query = query.where(Bake.pi == get_pi(serial))
    return list(pw.prefetch(query, Disk.select(Disk.id, Disk.bake)))


def list_bakeforms() -> list[Bakeform]:
    return list(Bakeform.select().order_by(Bakeform.name))


def list_disks(bake_id: str | None = None) -> list[Disk]:
    query = _scoped(Disk.select().order_by(Disk.created_at), Disk)
    if bake_id is not None:
        query = query.where(Disk.bake == bake_id)
    return list(query)


def list_snapshots(disk_id: str) -> list[Snapshot]:
    disk = get_disk(disk_id)
    return list(Snapshot.select().where(Snapshot.disk_id == disk.id))


def console(serial: str, limit: int = 200) -> list[ConsoleLine]:
    """The Pi's newest ``limit`` bootloader log lines, oldest first."""
    return console_lines.console_of(get_pi(serial), limit)


def timeline(
    serial: str, *, bake_id: str | None = None, limit: int = 200, after: int | None = None
) -> list[Event]:
    """The Pi's newest ``limit`` events (of one bake if ``bake_id``, newer than event
    ``after`` if given), oldest first."""
    return events.timeline(get_pi(serial), bake_id=bake_id, limit=limit, after=after)


def boot_history(serial: str, boots: int = 10) -> list[events.BootRecord]:
    """The Pi's last ``boots`` boots, oldest first, with the seconds of each phase."""
    return events.boot_history(get_pi(serial), boots)


def count_by(model: type[pw.Model], column: pw.Field, *where: pw.Expression) -> Counter[str]:
    """Rows of ``model`` by the value of ``column``, in one query."""
    query = model.select(column, pw.fn.COUNT(pw.SQL("*")))
    if where:
        query = query.where(*where)
    rows = cast("Iterable[tuple[str, int]]", query.group_by(column).tuples())
    return Counter(dict(rows))
