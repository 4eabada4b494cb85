"""The two state machines, each a table: a Pi's and a bake's. Nothing else moves either.

A move is one conditional UPDATE (``WHERE state = <from>``) and its timeline event, in one
transaction: two gunicorn workers or two bakery hosts sharing PostgreSQL can never both
move the same Pi or bake, and no move is ever without its event.
"""

from __future__ import annotations

from typing import Any

from ..errors import Conflict
from ..models import Bake, BakeState, Pi, PiState, database, utcnow
from . import events

S = PiState
#: The Pi state machine: (from, to) → what the move means.
PI_TRANSITIONS: dict[tuple[PiState, PiState], str] = {
    (S.DISCOVERED, S.AVAILABLE): "accepted",
    (S.AVAILABLE, S.PREPARING): "claimed for a bake",
    (S.PREPARING, S.BAKED): "baked",
    (S.PREPARING, S.AVAILABLE): "bake rolled back",
    (S.BAKED, S.UNBAKING): "unbaking",
    (S.UNBAKING, S.AVAILABLE): "unbaked",
    (S.BROKEN, S.AVAILABLE): "repaired",
    **{(state, S.BROKEN): "broken" for state in PiState if state is not S.BROKEN},
}

B = BakeState
#: The bake state machine: a bake is never reused, so it ends ``unbaked`` or ``failed``.
BAKE_TRANSITIONS: dict[tuple[BakeState, BakeState], str] = {
    (B.PREPARING, B.BAKED): "bake ready",
    (B.PREPARING, B.FAILED): "bake failed",
    (B.BAKED, B.UNBAKING): "unbake started",
    (B.UNBAKING, B.UNBAKED): "unbake finished",
}

#: A bake that is not finished: it holds its Pi, its root and its disks.
LIVE_BAKE_STATES = (B.PREPARING.value, B.BAKED.value, B.UNBAKING.value)
#: A bake whose root is exported to its Pi and whose Pi is served boot files.
BOOTABLE_BAKE_STATES = (B.PREPARING.value, B.BAKED.value)


def pi_move_allowed(current: PiState, target: PiState) -> bool:
    return (current, target) in PI_TRANSITIONS


def move_pi(
    pi: Pi,
    target: PiState,
    reason: str = "",
    *,
    expect: PiState | None = None,
    event_data: dict[str, Any] | None = None,
    **fields: Any,
) -> Pi:
    """Move ``pi`` to ``target`` if it is still where we last saw it (``expect``, by
    default its state as loaded), setting ``fields`` too; record why. Conflict if the
    table forbids the move or the Pi moved meanwhile."""
    current = PiState(expect or pi.state)
    if not pi_move_allowed(current, target):
        raise Conflict(
            f"Pi {pi.serial} cannot go from {current.value} to {target.value}",
            code="invalid_state",
        )
    message = PI_TRANSITIONS[(current, target)] + (f": {reason}" if reason else "")
    data = {"from": current.value, "to": target.value, **(event_data or {})}
    with database.atomic():
        changed = (
            Pi.update(state=target.value, updated_at=utcnow(), **fields)
            .where(Pi.id == pi.id, Pi.state == current.value)
            .execute()
        )
        if not changed:
            raise Conflict(f"Pi {pi.serial} changed state meanwhile", code="state_changed")
        events.record(pi, "state", message, fields.get("bake_id") or pi.bake_id, **data)
    return Pi.get_by_id(pi.id)


def move_bake(bake: Bake, target: BakeState, **fields: Any) -> Bake:
    """Move ``bake`` from the state it was loaded in to ``target``, setting ``fields``
    too, and record it on its Pi's timeline. Conflict (``bake_in_progress``) if another
    request moved it first."""
    current = BakeState(bake.state)
    if (current, target) not in BAKE_TRANSITIONS:
        raise Conflict(
            f"bake {bake.id} cannot go from {current.value} to {target.value}",
            code="invalid_state",
        )
    with database.atomic():
        changed = (
            Bake.update(state=target.value, **fields)
            .where(Bake.id == bake.id, Bake.state == current.value)
            .execute()
        )
        if not changed:
            raise Conflict(f"bake {bake.id} changed state meanwhile", code="bake_in_progress")
        data = {"from": current.value, "to": target.value}
        events.record(bake.pi_id, "bake", BAKE_TRANSITIONS[(current, target)], bake.id, **data)
    return Bake.get_by_id(bake.id)
