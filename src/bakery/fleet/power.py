"""The fleet's use of power: which driver and settings switch a Pi, the power state it
last reported, and bringing Pis back to the power their state implies after a restart."""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from datetime import datetime

from ..errors import PowerFailed
from ..models import Pi, PiState
from ..power import PowerAction, PowerError, PowerResult, PowerTarget, driver_class
from .context import FleetContext
from .queries import get_pi

log = logging.getLogger(__name__)


def power_target(pi: Pi) -> PowerTarget:
    return PowerTarget(
        serial=pi.serial, mac=pi.mac, model=pi.model, settings=dict(pi.power_settings or {})
    )


def power_pi(ctx: FleetContext, pi: Pi, action: PowerAction) -> PowerResult:
    """Run a power action and remember the Pi's power state. Actions on one Pi run one
    at a time, from every process of the host (the start-up restore runs beside the API)."""
    with _power_lock(ctx, pi):
        return _switch(ctx, pi, action)


def _power_lock(ctx: FleetContext, pi: Pi) -> AbstractContextManager[None]:
    return ctx.lock(f"power-{pi.serial}")


def _switch(ctx: FleetContext, pi: Pi, action: PowerAction) -> PowerResult:
    result = ctx.power.run(pi.power_driver, power_target(pi), action)
    state = result.state if result.state in ("on", "off") else "unknown"
    Pi.update(power_state=state).where(Pi.id == pi.id).execute()
    return result


def operator_power(ctx: FleetContext, serial: str, action: PowerAction) -> PowerResult:
    """A power action asked for over the API: a failure is the user's error to read."""
    pi = get_pi(serial)
    try:
        return power_pi(ctx, pi, action)
    except PowerError as exc:
        raise PowerFailed(f"power {action} of Pi {pi.serial} failed: {exc.message}") from None


#: What a Pi's state says its power should be, for the Pis whose state says anything.
POWER_OF_STATE: dict[str, PowerAction] = {PiState.BAKED.value: "on", PiState.AVAILABLE.value: "off"}


def restore_power(ctx: FleetContext, registered_before: datetime | None = None) -> None:
    """After a restart, bring queryable Pis back to the power state their state implies.

    It runs beside the API (``bakery serve`` starts it in the background: a hung relay
    must not keep the API from listening), so each Pi is read again under its power
    lock: a Pi baked or unbaked meanwhile is the bake's to switch, not this. Only Pis
    registered before ``registered_before`` (the start) are restored: one registered
    since is its operator's, and not this restart's to switch."""
    pis = Pi.select().where(Pi.state.in_(list(POWER_OF_STATE)))
    if registered_before is not None:
        pis = pis.where(Pi.created_at < registered_before)
    for pi in pis:
        if not driver_class(pi.power_driver).queryable:
            continue
        try:
            with _power_lock(ctx, pi):
                _restore(ctx, Pi.get_by_id(pi.id))
        except PowerError as exc:
            log.warning("restoring power of Pi %s failed: %s", pi.serial, exc.message)


def _restore(ctx: FleetContext, pi: Pi) -> None:
    wanted = POWER_OF_STATE.get(pi.state)
    if wanted is None:
        return
    if _switch(ctx, pi, "status").state != wanted:
        _switch(ctx, pi, wanted)
