"""What every power driver promises, and the registry the fleet picks drivers from.

A driver only knows how to talk to one kind of power device. Timeouts it is given,
but retries, per-device serialisation, power-on spacing and the audit trail live in
:mod:`bakery.power.controller`, so that every driver gets the same policy and a
new driver stays a few dozen lines.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, get_args

from bakery.config import Settings

PowerAction = Literal["on", "off", "cycle", "status"]
POWER_ACTIONS: tuple[str, ...] = get_args(PowerAction)

#: Error types a driver may raise. The first three are worth another attempt.
ERROR_TYPES = ("retryable", "connection", "timeout", "fatal", "auth", "setting", "unsupported")
RETRYABLE_TYPES = frozenset({"retryable", "connection", "timeout"})

POWER_STATES = ("on", "off", "unknown")


class PowerError(Exception):
    """A power call failed; ``type`` tells the controller whether trying again can help.

    ``auth``/``setting``/``fatal`` mean a human must change something, so repeating
    the call would only toggle a relay in vain or lock an account."""

    def __init__(self, type: str, message: str):
        if type not in ERROR_TYPES:
            raise ValueError(f"unknown power error type {type!r}")
        super().__init__(f"{type}: {message}")
        self.type = type
        self.message = message

    @property
    def retryable(self) -> bool:
        return self.type in RETRYABLE_TYPES


@dataclass(frozen=True)
class PowerTarget:
    """The Pi a call is about. ``settings`` is the Pi's ``power_settings`` JSON."""

    serial: str
    mac: str | None
    model: str
    settings: dict[str, Any]


@dataclass(frozen=True)
class PowerResult:
    """What the device says after the call; ``unknown`` when it cannot tell."""

    state: str
    message: str = ""


class PowerDriver(ABC):
    """One kind of power device.

    ``queryable`` says whether ``status`` can ever report a real state (MAAS's term);
    ``switches_power`` is False for drivers where nothing physical happens, which
    exempts them from the fleet-wide power-on spacing.
    """

    name: ClassVar[str]
    queryable: ClassVar[bool]
    switches_power: ClassVar[bool] = True

    def __init__(self, config: Settings):
        self.config = config

    @classmethod
    @abstractmethod
    def validate_settings(cls, settings: dict[str, Any], config: Settings) -> dict[str, Any]:
        """Check a Pi's power settings when it is registered or updated, so that a typo
        fails at the API with the field's name rather than at the first bake, and
        against what the operator allows in ``config`` (programs, relay hosts).

        Returns the normalised settings; raises ``ValueError`` naming the field."""

    @abstractmethod
    def device_key(self, target: PowerTarget) -> str:
        """The physical device behind ``target``: calls with the same key never overlap,
        because relay boards and PDUs handle one request at a time badly."""

    @abstractmethod
    def on(self, target: PowerTarget) -> PowerResult: ...

    @abstractmethod
    def off(self, target: PowerTarget) -> PowerResult: ...

    @abstractmethod
    def status(self, target: PowerTarget) -> PowerResult: ...

    def cycle(self, target: PowerTarget) -> PowerResult:
        """Off then on; drivers whose device has a native reset may do better."""
        self.off(target)
        return self.on(target)


#: Driver name (as stored in a Pi's ``power_driver``) to driver class. The driver
#: modules add themselves with :func:`register`; importing ``bakery.power`` loads them.
DRIVERS: dict[str, type[PowerDriver]] = {}


def register(driver: type[PowerDriver]) -> type[PowerDriver]:
    """Class decorator: make a driver available under its ``name``."""
    DRIVERS[driver.name] = driver
    return driver


def driver_class(name: str) -> type[PowerDriver]:
    """The driver class called ``name``; ``ValueError`` lists the known ones."""
    try:
        return DRIVERS[name]
    except KeyError:
        known = ", ".join(sorted(DRIVERS))
        raise ValueError(f"unknown power driver {name!r} (known: {known})") from None


def reject_unknown_keys(settings: dict[str, Any], known: set[str], driver: str) -> None:
    """Refuse settings a driver does not read: a misspelt key would otherwise be ignored."""
    if not isinstance(settings, dict):
        raise ValueError(f"{driver} power settings must be a JSON object")
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(f"{driver} power settings: unknown field(s) {', '.join(unknown)}")
