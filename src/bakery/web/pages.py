"""What the dashboard shows: the fleet grid, a Pi with its timeline, bootloader log and
last boots, and the bakeforms, bakes and disks. Read-only, and whole without JavaScript."""

from __future__ import annotations

from collections import Counter
from typing import Any

from flask import render_template

from ..api.current import current_fleet as fleet
from ..errors import NotFound
from ..fleet import BOOT_PHASES, DISK_FILESYSTEMS, Bake, Pi, PiState
from .blueprint import blp
from .session import requires

#: Timeline events and bootloader-log lines a Pi's page starts with.
PAGE_EVENTS = 200
PAGE_CONSOLE_LINES = 200
#: Boots in a Pi's phase chart.
CHARTED_BOOTS = 10


def visible_bake(pi: Pi) -> Bake | None:
    """The Pi's live bake, if the signed-in token may see it (its owner's, or any)."""
    if not pi.bake_id:
        return None
    try:
        return fleet().get_bake(pi.bake_id)
    except NotFound:
        return None


def pi_card(pi: Pi, bakes: dict[str, Bake]) -> dict[str, Any]:
    """What a Pi's tile in the grid (and the head of its page) shows."""
    bake = bakes.get(pi.bake_id or "")
    return {
        "pi": pi,
        "bake": bake,
        "boot": fleet().boot_status(pi),
    }


@blp.route("/")
@requires("fleet_read")
def fleet_grid() -> str:
    pis = fleet().list_pis()
    bakes = {bake.id: bake for bake in fleet().list_bakes()}
    counts = Counter(pi.state for pi in pis)
    return render_template(
        "fleet.html",
        cards=[pi_card(pi, bakes) for pi in pis],
        counts=[(state.value, counts[state.value]) for state in PiState if counts[state.value]],
    )


@blp.route("/pis/<serial>")
@requires("fleet_read")
def pi_page(serial: str) -> str:
    pi = fleet().get_pi(serial)
    bake = visible_bake(pi)
    return render_template(
        "pi.html",
        card=pi_card(pi, {bake.id: bake} if bake else {}),
        events=fleet().timeline(pi.serial, limit=PAGE_EVENTS),
        console=fleet().console(pi.serial, PAGE_CONSOLE_LINES),
        boots=fleet().boot_history(pi.serial, CHARTED_BOOTS),
        phases=BOOT_PHASES,
        bakeforms=fleet().list_bakeforms(),
    )


@blp.route("/bakeforms")
@requires("work_read")
def bakeforms() -> str:
    return render_template("bakeforms.html", bakeforms=fleet().list_bakeforms())


@blp.route("/bakes")
@requires("work_read")
def bakes() -> str:
    return render_template("bakes.html", bakes=fleet().list_bakes())


@blp.route("/disks")
@requires("work_read")
def disks() -> str:
    live = [bake.id for bake in fleet().list_bakes()]
    return render_template(
        "disks.html",
        disks=fleet().list_disks(),
        bakes=live,
        filesystems=DISK_FILESYSTEMS,
    )
