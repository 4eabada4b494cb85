"""``bakery token``: create (printed once), list and revoke API tokens."""

from __future__ import annotations

import click

from .output import Context, api_command, emit


@click.group()
def token() -> None:
    """API tokens."""


@api_command(token, "create")
@click.argument("name")
def token_create(ctx: Context, name: str) -> None:
    """Create a token; it is printed once and never again."""
    emit(ctx, ctx.api.post("/tokens", {"name": name}))


@api_command(token, "list")
def token_list(ctx: Context) -> None:
    emit(
        ctx,
        ctx.api.get("/tokens"),
        ("name", "prefix", "role", "created_at", "last_used_at"),
        title="tokens",
    )


@api_command(token, "revoke")
@click.argument("name")
def token_revoke(ctx: Context, name: str) -> None:
    ctx.api.delete(f"/tokens/{name}")
    click.echo(f"revoked token {name}", err=True)
