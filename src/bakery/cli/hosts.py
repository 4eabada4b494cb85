"""``bakery host``: the Bakery hosts sharing this database."""

from __future__ import annotations

from typing import Any

import click

from .output import Context, api_command, emit

HOST_COLUMNS = ("name", "live", "machine", "pis", "data_free", "heartbeat_at", "started_at")


@click.group()
def host() -> None:
    """Bakery hosts (several share one PostgreSQL database)."""


@api_command(host, "list")
def host_list(ctx: Context) -> None:
    """Each host: live or not, where it runs, its Pis, its data dir's free space."""
    hosts = ctx.api.get("/hosts")
    if ctx.json:
        emit(ctx, hosts)
        return
    emit(ctx, [host_row(entry) for entry in hosts], HOST_COLUMNS, title="hosts")


def host_row(entry: dict[str, Any]) -> dict[str, Any]:
    total, free = entry["data_bytes"], entry["data_free_bytes"]
    share = f" ({100 * free / total:.0f} %)" if total else ""
    return {
        **entry,
        "live": "live" if entry["live"] else "down",
        "data_free": f"{free / 2**30:.1f} GiB{share}",
    }
