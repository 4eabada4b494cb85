"""Pis as an operator describes them: registration, changes, the operator's state moves
(accept, break, repair) and deletion. One address belongs to one Pi."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import identifiers
from ..errors import Conflict, InvalidInput
from ..models import BOOT_PROTOCOLS, UNKNOWN_MODEL, Host, Pi, PiState, database, utcnow
from ..power import driver_class
from . import events
from .context import FleetContext
from .exports import publish_exports
from .queries import get_pi, live_bake_of
from .states import move_pi

S = PiState


def register_pi(
    ctx: FleetContext,
    serial: str,
    *,
    mac: str | None = None,
    model: str = UNKNOWN_MODEL,
    power_driver: str | None = None,
    power_settings: dict[str, Any] | None = None,
    labels: Sequence[str] = (),
    ip: str | None = None,
    boot_protocol: str = "tftp",
    host: str | None = None,
) -> Pi:
    """A new Pi, available for bakes at once."""
    serial = identifiers.serial(serial)
    driver = power_driver or ctx.settings.default_power_driver
    fields = checked_pi_fields(
        ctx,
        mac=mac,
        power_driver=driver,
        power_settings=power_settings or {},
        labels=labels,
        ip=ip,
        boot_protocol=boot_protocol,
        current_model=model,
        host=host or ctx.settings.host_id,
    )
    if Pi.select().where(Pi.serial == serial).exists():
        raise Conflict(f"a Pi with serial {serial} is already registered")
    _check_mac_free(fields.get("mac"), serial)
    with database.atomic():
        if fields.get("last_ip"):
            release_address(fields["last_ip"])
        pi = Pi.create(serial=serial, model=model, state=S.AVAILABLE.value, **fields)
        events.record(pi, "state", "registered", state=pi.state)
    return pi


def update_pi(ctx: FleetContext, /, serial: str, **changes: Any) -> Pi:
    """Change a Pi's description. State changes go through ``set_pi_state``."""
    pi = get_pi(serial)
    if "power_driver" in changes and "power_settings" not in changes:
        changes["power_settings"] = pi.power_settings
    if "power_settings" in changes and "power_driver" not in changes:
        changes["power_driver"] = pi.power_driver
    fields = checked_pi_fields(ctx, current_model=pi.model, **changes)
    _check_mac_free(fields.get("mac"), pi.serial)
    if not fields:
        return pi
    with database.atomic():
        if fields.get("last_ip"):
            release_address(fields["last_ip"], keep=pi.id)
        Pi.update(updated_at=utcnow(), **fields).where(Pi.id == pi.id).execute()
        events.record(pi, "pi", "updated", fields=sorted(fields))
    if "last_ip" in fields and pi.bake_id:
        publish_exports(ctx)
    return Pi.get_by_id(pi.id)


def set_pi_state(serial: str, state: PiState, reason: str = "") -> Pi:
    """An operator's move: accept a discovered Pi, mark one broken, repair it."""
    pi = get_pi(serial)
    if state is S.BROKEN:
        return move_pi(pi, S.BROKEN, reason, broken_reason=reason or "operator")
    if state is S.AVAILABLE and pi.state in (S.DISCOVERED.value, S.BROKEN.value):
        if live_bake_of(pi):
            raise Conflict(f"Pi {pi.serial} still has bake {pi.bake_id}; unbake it first")
        return move_pi(pi, S.AVAILABLE, reason, broken_reason="", bake_id=None)
    raise Conflict(
        f"Pi {pi.serial} is {pi.state}; an operator may only mark a Pi broken, "
        "or make a discovered or broken Pi available",
        code="invalid_state",
    )


def delete_pi(serial: str) -> None:
    pi = get_pi(serial)
    if live_bake_of(pi) or pi.state in (S.PREPARING.value, S.UNBAKING.value):
        raise Conflict(f"Pi {pi.serial} has a live bake; unbake it first")
    pi.delete_instance(recursive=True)


def checked_pi_fields(
    ctx: FleetContext, *, current_model: str = UNKNOWN_MODEL, **changes: Any
) -> dict[str, Any]:
    """The Pi columns for ``changes`` to a Pi of ``current_model``, each value checked;
    InvalidInput names the field."""
    fields: dict[str, Any] = {}
    try:
        if changes.get("mac") is not None:
            fields["mac"] = identifiers.mac(changes["mac"])
        if changes.get("ip") is not None:
            fields["last_ip"] = identifiers.ip(changes["ip"])
        if changes.get("labels") is not None:
            fields["labels"] = sorted({identifiers.label(x) for x in changes["labels"]})
        if changes.get("model") is not None:
            fields["model"] = changes["model"]
        if changes.get("boot_protocol") is not None:
            model = changes.get("model") or current_model
            fields["boot_protocol"] = check_boot_protocol(ctx, changes["boot_protocol"], model)
    except identifiers.InvalidIdentifier as exc:
        raise InvalidInput(str(exc)) from None
    if changes.get("host") is not None:
        fields["host"] = _known_host(ctx, changes["host"])
    if changes.get("power_driver") is not None:
        try:
            driver = driver_class(changes["power_driver"])
            power_settings = changes.get("power_settings") or {}
            fields["power_settings"] = driver.validate_settings(power_settings, ctx.settings)
        except ValueError as exc:
            raise InvalidInput(f"power settings: {exc}") from None
        fields["power_driver"] = changes["power_driver"]
    return fields


def _known_host(ctx: FleetContext, name: str) -> str:
    """``name`` if it is this host or one that has joined the database; a Pi moved to a
    host that does not exist would never be served."""
    if name != ctx.settings.host_id and not Host.select().where(Host.name == name).exists():
        raise InvalidInput(f"host: no Bakery host named {name!r} has joined this database")
    return name


#: Models whose bootloader cannot boot over HTTP (the Pi 3 ROM knows TFTP only).
TFTP_ONLY_MODELS = ("3B", "3B+")


def check_boot_protocol(ctx: FleetContext, protocol: str, model: str | None = None) -> str:
    """``protocol`` if this server can boot a Pi of ``model`` over it; InvalidInput on
    the ``boot_protocol`` field otherwise."""
    if protocol not in BOOT_PROTOCOLS:
        problem = f"must be one of {', '.join(BOOT_PROTOCOLS)}"
    elif protocol == "http" and ctx.settings.http_boot_address is None:
        problem = "HTTP boot is off on this server (set http_boot_bind)"
    elif protocol == "http" and model in TFTP_ONLY_MODELS:
        problem = f"a Pi {model} bootloader cannot boot over HTTP"
    else:
        return protocol
    raise InvalidInput.of_field("boot_protocol", problem)


def _check_mac_free(mac: str | None, serial: str) -> None:
    if mac and Pi.select().where(Pi.mac == mac, Pi.serial != serial).exists():
        raise Conflict(f"MAC {mac} belongs to another Pi")


def release_address(ip: str, keep: int | None = None) -> None:
    """An address belongs to one Pi: whoever had it before no longer does."""
    query = Pi.update(last_ip=None).where(Pi.last_ip == ip)
    if keep is not None:
        query = query.where(Pi.id != keep)
    query.execute()
