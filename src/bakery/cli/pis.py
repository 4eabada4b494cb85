"""``bakery pi``: register, update, list, show, power and delete Pis; ``bakery fridge``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from ..models import BOOT_PROTOCOLS
from .output import Context, api_command, emit, without_none

F = TypeVar("F", bound=Callable[..., Any])


@click.group()
def pi() -> None:
    """The Raspberry Pis Bakery manages."""


PI_COLUMNS = (
    "serial",
    "model",
    "state",
    "ip",
    "mac",
    "power_driver",
    "power_state",
    "labels",
    "bake_id",
    "host",
)


def parse_settings(pairs: Sequence[str], raw: str | None) -> dict[str, Any] | None:
    """``--power-setting key=value`` pairs and/or ``--power-settings JSON``."""
    if not pairs and raw is None:
        return None
    try:
        settings = json.loads(raw) if raw else {}
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--power-settings") from None
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"{pair!r} is not key=value", param_hint="--power-setting")
        settings[key] = value
    return settings


def pi_options(func: F) -> F:
    for option in reversed(
        [
            click.option("--mac", help="Ethernet MAC address."),
            click.option("--model", help="3B, 3B+, 4B, 400, CM4, 5, CM5, 500."),
            click.option("--ip", help="Address the Pi boots from (learned from TFTP otherwise)."),
            click.option("--label", "labels", multiple=True, help="A label (repeatable)."),
            click.option(
                "--boot-protocol",
                type=click.Choice(BOOT_PROTOCOLS),
                help="What its EEPROM boots over (http: a signed boot.img, Pi 4 and 5).",
            ),
            click.option("--host", help="The Bakery host that serves it (default: this one)."),
            click.option("--power-driver", help="manual, ppi or webhook."),
            click.option(
                "--power-setting",
                "power_pairs",
                multiple=True,
                metavar="KEY=VALUE",
                help="A power driver setting (repeatable).",
            ),
            click.option(
                "--power-settings",
                "power_json",
                metavar="JSON",
                help="All power driver settings as a JSON object.",
            ),
        ]
    ):
        func = option(func)
    return func


def pi_body(
    mac: str | None,
    model: str | None,
    ip: str | None,
    labels: Sequence[str],
    boot_protocol: str | None,
    host: str | None,
    power_driver: str | None,
    power_pairs: Sequence[str],
    power_json: str | None,
) -> dict[str, Any]:
    body = {
        "mac": mac,
        "model": model,
        "ip": ip,
        "labels": list(labels) or None,
        "boot_protocol": boot_protocol,
        "host": host,
        "power_driver": power_driver,
        "power_settings": parse_settings(power_pairs, power_json),
    }
    return without_none(body)


@api_command(pi, "register")
@click.argument("serial")
@pi_options
def pi_register(ctx: Context, serial: str, **options: Any) -> None:
    """Register the Pi with SERIAL (8 hex digits, as the Pi prints it)."""
    emit(ctx, ctx.api.post("/pis", {"serial": serial, **pi_body(**options)}))


@api_command(pi, "update")
@click.argument("serial")
@pi_options
@click.option(
    "--state",
    type=click.Choice(["available", "broken"]),
    help="Accept or repair (available) or take out of service (broken).",
)
@click.option("--reason", default="", help="Why, for the timeline.")
def pi_update(ctx: Context, serial: str, state: str | None, reason: str, **options: Any) -> None:
    """Change a Pi's description or take it in or out of service."""
    body = pi_body(**options)
    if state:
        body.update(state=state, reason=reason)
    emit(ctx, ctx.api.patch(f"/pis/{serial}", body))


@api_command(pi, "list")
@click.option("--state", help="Only Pis in this state.")
@click.option("--label", "labels", multiple=True, help="Only Pis with this label.")
def pi_list(ctx: Context, state: str | None, labels: tuple[str, ...]) -> None:
    params = {"state": state, "label": list(labels) or None}
    emit(ctx, ctx.api.get("/pis", **params), PI_COLUMNS, title="Pis")


@api_command(pi, "show")
@click.argument("serial")
@click.option("--events", "limit", default=20, show_default=True, help="Timeline entries shown.")
def pi_show(ctx: Context, serial: str, limit: int) -> None:
    """A Pi and its timeline (states, power calls, boot steps)."""
    info = ctx.api.get(f"/pis/{serial}")
    events = ctx.api.get(f"/pis/{serial}/events", limit=limit)
    if ctx.json:
        emit(ctx, {**info, "events": events})
        return
    emit(ctx, info)
    click.echo("")
    emit(ctx, [timeline_row(event) for event in events], TIMELINE_COLUMNS, title="events")


#: A timeline as people read it: when (within its boot), what kind, what happened.
TIMELINE_COLUMNS = ("at", "kind", "message")


def timeline_row(event: dict[str, Any]) -> dict[str, Any]:
    """An event with its time relative to its boot's power-on (``+2.31 s``), or the
    clock time for events before any power-on."""
    since = event.get("since_power_on")
    at = f"+{since:.2f} s" if since is not None else event["created_at"][:19].replace("T", " ")
    return {"at": at, "kind": event["kind"], "message": event["message"]}


@api_command(pi, "console")
@click.argument("serial")
@click.option("--lines", "limit", default=100, show_default=True, help="Newest lines shown.")
def pi_console(ctx: Context, serial: str, limit: int) -> None:
    """The Pi's bootloader log, as its EEPROM's NETCONSOLE sent it."""
    lines = ctx.api.get(f"/pis/{serial}/console", limit=limit)
    if ctx.json:
        emit(ctx, lines)
        return
    for entry in lines:
        click.echo(f"{entry['created_at'][11:23]}  {entry['line']}")
    if not lines:
        click.echo("(no bootloader log: set NETCONSOLE in its EEPROM, and netconsole_bind)")


@api_command(pi, "watch")
@click.argument("serial")
@click.option("--until", "until", help="Stop at the first event whose message has this text.")
@click.option("--timeout", type=click.FloatRange(min=0), help="Give up after this many seconds.")
@click.option("--interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True)
def pi_watch(
    ctx: Context, serial: str, until: str | None, timeout: float | None, interval: float
) -> None:
    """Follow a Pi's timeline live (Ctrl-C to stop): its last events, then each new one."""
    deadline = None if timeout is None else time.monotonic() + timeout
    events = ctx.api.get(f"/pis/{serial}/events", limit=10)
    last = 0
    while True:
        for event in events:
            row = timeline_row(event)
            click.echo(f"{row['at']:>12}  {row['kind']:<6}  {row['message']}")
            if until is not None and until in event["message"]:
                return
            last = event["id"]
        if deadline is not None and time.monotonic() >= deadline:
            if until is None:
                return
            raise click.ClickException(f"no event with {until!r} in {timeout:g} s")
        time.sleep(interval)  # the polling period, not a wait for a condition
        events = ctx.api.get(f"/pis/{serial}/events", after=last, limit=1000)


@api_command(pi, "power")
@click.argument("serial")
@click.argument("action", type=click.Choice(["on", "off", "cycle", "status"]))
def pi_power(ctx: Context, serial: str, action: str) -> None:
    emit(ctx, ctx.api.post(f"/pis/{serial}/power", {"action": action}))


@api_command(pi, "delete")
@click.argument("serial")
def pi_delete(ctx: Context, serial: str) -> None:
    ctx.api.delete(f"/pis/{serial}")
    click.echo(f"deleted Pi {serial}", err=True)


@api_command(None, "fridge")
def fridge(ctx: Context) -> None:
    """Pis available for a bake."""
    emit(ctx, ctx.api.get("/pis", state="available"), PI_COLUMNS, title="available Pis")
