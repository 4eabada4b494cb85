"""``bakery token``: create (printed once), list and revoke API tokens."""

from __future__ import annotations

import click

from ..identifiers import ROLES
from .output import Context, api_command, emit


@click.group()
def token() -> None:
    """API tokens."""


@api_command(token, "create")
@click.argument("name")
@click.option(
    "--role",
    type=click.Choice(ROLES),
    default="viewer",
    show_default=True,
    help="admin: everything; operator: the fleet; cpi: what a BOSH director calls; "
    "viewer: read only.",
)
@click.option("--owner", help="Whose bakes and disks it makes and sees (default: NAME).")
def token_create(ctx: Context, name: str, role: str, owner: str | None) -> None:
    """Create a token; it is printed once and never again."""
    body = {"name": name, "role": role, **({"owner": owner} if owner else {})}
    emit(ctx, ctx.api.post("/tokens", body))


@api_command(token, "list")
def token_list(ctx: Context) -> None:
    emit(
        ctx,
        ctx.api.get("/tokens"),
        ("name", "prefix", "role", "owner", "configured", "created_at", "last_used_at"),
        title="tokens",
    )


@api_command(token, "revoke")
@click.argument("name")
def token_revoke(ctx: Context, name: str) -> None:
    ctx.api.delete(f"/tokens/{name}")
    click.echo(f"revoked token {name}", err=True)
