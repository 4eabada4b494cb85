"""``bakery bake``, ``unbake`` and ``oven``: the verbs a Pi user types most."""

from __future__ import annotations

from typing import TextIO

import click

from ..models import BOOT_PROTOCOLS
from .output import Context, api_command, emit, without_none

BAKE_COLUMNS = ("id", "serial", "ip", "bakeform", "state", "hostname", "created_at")


@api_command(None, "bake")
@click.argument("bakeform_name", metavar="BAKEFORM")
@click.option("--serial", help="Bake this Pi (default: any free one).")
@click.option("--label", "labels", multiple=True, help="Bake a Pi with this label (repeatable).")
@click.option("--model", help="Bake a Pi of this model.")
@click.option("--hostname", help="Hostname (default pi-<serial>).")
@click.option(
    "--disk",
    "disk_ids",
    multiple=True,
    help="Attach this detached disk before the Pi powers on (repeatable).",
)
@click.option(
    "--boot-protocol",
    type=click.Choice(BOOT_PROTOCOLS),
    help="Boot over tftp, or http (a signed boot.img); default the Pi's setting.",
)
@click.option(
    "--user-data",
    type=click.File("r"),
    help="cloud-init user-data for the bake (#cloud-config YAML or a #! script).",
)
def bake(
    ctx: Context,
    bakeform_name: str,
    serial: str | None,
    labels: tuple[str, ...],
    model: str | None,
    hostname: str | None,
    disk_ids: tuple[str, ...],
    boot_protocol: str | None,
    user_data: TextIO | None,
) -> None:
    """Bake BAKEFORM onto a free Pi and power it on."""
    body = {
        "bakeform": bakeform_name,
        "serial": serial,
        "labels": list(labels),
        "model": model,
        "hostname": hostname,
        "disk_ids": list(disk_ids) or None,
        "boot_protocol": boot_protocol,
        "user_data": user_data.read() if user_data else None,
    }
    emit(ctx, ctx.api.post("/bakes", without_none(body)))


@api_command(None, "unbake")
@click.argument("bake_id")
def unbake(ctx: Context, bake_id: str) -> None:
    """Power the Pi off, delete its root and free it."""
    emit(ctx, ctx.api.delete(f"/bakes/{bake_id}"))


@api_command(None, "oven")
@click.option("--all", "show_all", is_flag=True, help="Include unbaked bakes.")
def oven(ctx: Context, show_all: bool) -> None:
    """Live bakes."""
    rows = ctx.api.get("/bakes", all="true" if show_all else None)
    emit(ctx, rows, BAKE_COLUMNS, title="bakes")
