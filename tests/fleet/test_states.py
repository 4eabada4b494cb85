"""fleet.states: the Pi and bake state tables, and moves that apply only if nothing moved
first."""

from __future__ import annotations

import pytest

from bakery.errors import Conflict
from bakery.fleet import events
from bakery.fleet.states import (
    BAKE_TRANSITIONS,
    BOOTABLE_BAKE_STATES,
    LIVE_BAKE_STATES,
    move_bake,
    move_pi,
)
from bakery.fleet.states import PI_TRANSITIONS as TRANSITIONS
from bakery.fleet.states import pi_move_allowed as allowed
from bakery.models import Bake, BakeState, Event, Pi, PiState

S = PiState


def test_the_state_table_is_the_architecture_lifecycle():
    lifecycle = [S.AVAILABLE, S.PREPARING, S.BAKED, S.UNBAKING, S.AVAILABLE]
    for current, target in zip(lifecycle, lifecycle[1:], strict=False):
        assert allowed(current, target)
    assert allowed(S.DISCOVERED, S.AVAILABLE)
    assert allowed(S.PREPARING, S.AVAILABLE)  # rollback
    assert all(allowed(state, S.BROKEN) for state in PiState if state is not S.BROKEN)
    assert allowed(S.BROKEN, S.AVAILABLE)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (S.AVAILABLE, S.BAKED),
        (S.BAKED, S.AVAILABLE),
        (S.DISCOVERED, S.PREPARING),
        (S.UNBAKING, S.BAKED),
        (S.BROKEN, S.PREPARING),
        (S.BROKEN, S.BROKEN),
    ],
)
def test_shortcuts_are_not_allowed(current, target):
    assert not allowed(current, target)
    assert (current, target) not in TRANSITIONS


def test_a_transition_applies_only_if_the_pi_is_still_where_we_saw_it(fleet):
    pi = fleet.register_pi("00000001")
    stale = Pi.get_by_id(pi.id)
    move_pi(pi, S.BROKEN, "operator")
    with pytest.raises(Conflict):
        move_pi(stale, S.PREPARING)
    assert Pi.get_by_id(pi.id).state == "broken"


B = BakeState


def test_a_bake_lives_preparing_baked_unbaking_and_ends_unbaked_or_failed():
    assert set(BAKE_TRANSITIONS) == {
        (B.PREPARING, B.BAKED),
        (B.PREPARING, B.FAILED),
        (B.BAKED, B.UNBAKING),
        (B.UNBAKING, B.UNBAKED),
    }
    assert set(LIVE_BAKE_STATES) == {"preparing", "baked", "unbaking"}
    assert set(BOOTABLE_BAKE_STATES) == {"preparing", "baked"}  # an unbaking Pi boots nothing


def test_a_bake_move_the_table_lacks_is_refused_and_changes_nothing(bake_pi):
    bake = bake_pi()
    with pytest.raises(Conflict) as refused:
        move_bake(bake, B.FAILED)  # a baked bake cannot fail any more: it is unbaked
    assert refused.value.code == "invalid_state"
    assert Bake.get_by_id(bake.id).state == "baked"


def test_a_bake_moved_by_another_request_first_is_a_conflict(bake_pi):
    bake = bake_pi()
    stale = Bake.get_by_id(bake.id)
    move_bake(bake, B.UNBAKING)
    with pytest.raises(Conflict) as lost:
        move_bake(stale, B.UNBAKING)
    assert lost.value.code == "bake_in_progress"


def test_every_move_of_a_bake_is_on_its_pis_timeline(fleet, bake_pi):
    bake = bake_pi()
    fleet.unbake(bake.id)
    moves = [
        (e.data["from"], e.data["to"])
        for e in Event.select().where(Event.kind == "bake", Event.bake_id == bake.id)
        if "from" in e.data
    ]
    assert moves == [("preparing", "baked"), ("baked", "unbaking"), ("unbaking", "unbaked")]


def test_a_move_and_its_event_are_one_transaction(fleet, monkeypatch):
    """An event that cannot be written leaves the Pi where it was: no move is unrecorded."""
    pi = fleet.register_pi("00000001")

    def no_events(*_args, **_kwargs):
        raise RuntimeError("the events table refused the row")

    monkeypatch.setattr(events, "record", no_events)
    with pytest.raises(RuntimeError):
        move_pi(pi, S.BROKEN, "smoke")
    assert Pi.get_by_id(pi.id).state == "available"


def test_the_claim_is_a_move_with_its_event(fleet, bake_pi):
    bake = bake_pi()
    claim = Event.get(Event.kind == "state", Event.message == "claimed for a bake")
    assert claim.bake_id == bake.id
    assert claim.data == {"from": "available", "to": "preparing", "bakeform": "raspios"}
