"""The fleet's use of power: which driver and settings switch a Pi, the power state it
last reported, and bringing Pis back to the power their state implies after a restart."""

from __future__ import annotations

import logging

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
    """Run a power action and remember the Pi's power state."""
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


def restore_power(ctx: FleetContext) -> None:
    """After a restart, bring queryable Pis back to the power state their state implies."""
    states = [PiState.BAKED.value, PiState.AVAILABLE.value]
    for pi in Pi.select().where(Pi.state.in_(states)):
        if not driver_class(pi.power_driver).queryable:
            continue
        wanted: PowerAction = "on" if pi.state == PiState.BAKED.value else "off"
        try:
            if power_pi(ctx, pi, "status").state != wanted:
                power_pi(ctx, pi, wanted)
        except PowerError as exc:
            log.warning("restoring power of Pi %s failed: %s", pi.serial, exc.message)
