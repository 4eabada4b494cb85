"""Allocation: a bake claims one available Pi with a conditional move, so concurrent bakes
from several workers or hosts never get the same Pi. A host claims only its own Pis (or
nobody's yet, which become its own): the root, exports and boot files it makes are where
only its TFTP and NFS look."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import identifiers
from ..errors import Conflict, NoPiAvailable
from ..models import Bake, Bakeform, PiState, database
from .actors import new_owner
from .context import FleetContext
from .hosts import adopt, check_ours
from .queries import available_pis, get_pi
from .states import move_pi


def claim(
    ctx: FleetContext,
    bakeform: Bakeform,
    *,
    serial: str | None,
    labels: Sequence[str],
    model: str | None,
    hostname: str | None,
    agent_settings: dict[str, Any] | None,
    metadata: dict[str, Any] | None,
    boot_protocol: str | None = None,
) -> Bake:
    """A new ``preparing`` bake on a Pi that was available: the Pi's move and the bake's
    row in one transaction. NoPiAvailable when every candidate is taken. The bake boots
    over ``boot_protocol``, by default the one its Pi is set to."""
    if serial:
        check_ours(ctx, get_pi(serial), "bake")
    bake_id = identifiers.new_id()
    for pi in available_pis(serial, labels, model, ctx.settings.host_id):
        if not adopt(ctx, pi):  # moved to another host meanwhile
            continue
        try:
            with database.atomic():
                move_pi(
                    pi,
                    PiState.PREPARING,
                    expect=PiState.AVAILABLE,
                    event_data={"bakeform": bakeform.name},
                    bake_id=bake_id,
                )
                return Bake.create(
                    id=bake_id,
                    pi=pi,
                    bakeform=bakeform,
                    bakeform_name=bakeform.name,
                    hostname=hostname or f"pi-{pi.serial}",
                    host_id=ctx.settings.host_id,
                    agent_settings=agent_settings,
                    metadata=metadata or {},
                    owner=new_owner(),
                    boot_protocol=boot_protocol or pi.boot_protocol,
                )
        except Conflict:  # another bake took this Pi first
            continue
    wanted = f"Pi {serial}" if serial else "Pi"
    raise NoPiAvailable(
        f"no {wanted} available" + (f" with labels {list(labels)}" if labels else "")
    )
