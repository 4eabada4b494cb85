"""Power control: drivers that switch Pis, and the controller that applies policy.

Importing the package loads every shipped driver, so ``DRIVERS`` is complete.
"""

from bakery.power import manual, ppi, webhook  # noqa: F401  (drivers register on import)
from bakery.power.base import (
    DRIVERS,
    POWER_ACTIONS,
    PowerAction,
    PowerDriver,
    PowerError,
    PowerResult,
    PowerTarget,
    driver_class,
)
from bakery.power.controller import PowerController, PowerEventSink

__all__ = [
    "DRIVERS",
    "POWER_ACTIONS",
    "PowerAction",
    "PowerController",
    "PowerDriver",
    "PowerError",
    "PowerEventSink",
    "PowerResult",
    "PowerTarget",
    "driver_class",
]
