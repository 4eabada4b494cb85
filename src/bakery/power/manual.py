"""The ``manual`` driver: an operator plugs and unplugs the Pi.

Bakery cannot know whether the operator did it, so every answer is ``unknown``; the
request is logged (and recorded as an event by the controller) so the operator can
see on the Pi's timeline what was asked of them and when.
"""

from __future__ import annotations

import logging
from typing import Any

from bakery.config import Settings
from bakery.power.base import PowerDriver, PowerResult, PowerTarget, register, reject_unknown_keys

logger = logging.getLogger(__name__)


@register
class ManualDriver(PowerDriver):
    name = "manual"
    queryable = False
    #: Nothing switches when bakery "powers on" a manual Pi, so it is not made to wait
    #: for the fleet-wide power-on gap: the operator paces the real power-ons.
    switches_power = False

    @classmethod
    def validate_settings(cls, settings: dict[str, Any], config: Settings) -> dict[str, Any]:
        """Only an optional free-text ``note`` (e.g. "socket 3 on the left strip")."""
        reject_unknown_keys(settings, {"note"}, cls.name)
        if "note" in settings and not isinstance(settings["note"], str):
            raise ValueError("manual power settings: 'note' must be a string")
        return dict(settings)

    def device_key(self, target: PowerTarget) -> str:
        return f"manual:{target.serial}"

    def on(self, target: PowerTarget) -> PowerResult:
        return self._ask(target, "on")

    def off(self, target: PowerTarget) -> PowerResult:
        return self._ask(target, "off")

    def status(self, target: PowerTarget) -> PowerResult:
        return PowerResult("unknown", "power is switched by hand; bakery cannot tell")

    def _ask(self, target: PowerTarget, state: str) -> PowerResult:
        note = target.settings.get("note", "")
        message = f"switch Pi {target.serial} {state} by hand" + (f" ({note})" if note else "")
        logger.warning("%s", message)
        return PowerResult("unknown", message)
