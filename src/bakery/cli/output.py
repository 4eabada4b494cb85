"""What every API command shares: the context (URL, token, ``--json``), the decorator that
turns API errors into one-line failures, and tables for people."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from ..client import ApiClient, ApiError

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_URL = "http://127.0.0.1:8080"


@dataclass
class Context:
    url: str = DEFAULT_URL
    token: str | None = None
    json: bool = False

    @functools.cached_property
    def api(self) -> ApiClient:
        return ApiClient(self.url, self.token)


def without_none(body: dict[str, Any]) -> dict[str, Any]:
    """A request body with the options the user did not give left out, so the server's
    defaults apply."""
    return {key: value for key, value in body.items() if value is not None}


def default_token() -> str | None:
    """The admin token the first start wrote, when this user can read it."""
    path = Path(os.environ.get("BAKERY_ROOT", "data")) / "admin-token"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def json_option(command: F) -> F:
    """``--json`` on every command that prints, as well as on the group."""

    def set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
        if value:
            ctx.ensure_object(Context).json = True

    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        expose_value=False,
        callback=set_json,
        help="Print JSON for scripts.",
    )(command)


def api_command(
    group: click.Group | None, *args: Any, **kwargs: Any
) -> Callable[[Callable[..., Any]], click.Command]:
    """A command that talks to the API: gets the context, turns API errors into
    one-line failures, and accepts ``--json``. Made in ``group``, or standalone (for
    the top-level verbs the ``bakery`` group adds) when ``group`` is None."""

    def decorate(func: Callable[..., Any]) -> click.Command:
        @functools.wraps(func)
        def run(*a: Any, **kw: Any) -> Any:
            ctx = click.get_current_context().find_object(Context)
            try:
                return func(ctx, *a, **kw)
            except ApiError as exc:
                raise click.ClickException(explained(exc, ctx)) from None

        make: Callable[..., Callable[[Callable[..., Any]], click.Command]] = (
            click.command if group is None else group.command
        )
        return make(*args, **kwargs)(json_option(run))

    return decorate


#: Where a CLI user gets a token from, for the error of a request made without one.
TOKEN_SOURCES = (
    "pass --token or set BAKERY_TOKEN (`bakery token create` makes one); on the Bakery host, "
    "run from the checkout or set BAKERY_ROOT to the data dir, whose admin-token is read"
)


def explained(error: ApiError, ctx: Context | None) -> str:
    """The API's error, with what the CLI user can do about it where the API cannot say
    (it knows nothing of the CLI's options)."""
    if error.status == 401 and (ctx is None or ctx.token is None):
        return f"{error}: no token given: {TOKEN_SOURCES}"
    return str(error)


def emit(ctx: Context, data: Any, columns: Sequence[str] = (), *, title: str = "") -> None:
    """Print ``data`` as JSON or as a table / key-value block."""
    if ctx.json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    if isinstance(data, list):
        click.echo(table(data, columns) if data else f"(no {title or 'entries'})")
        return
    width = max((len(k) for k in data), default=0)
    for key, value in data.items():
        if isinstance(value, dict | list):
            value = json.dumps(value, sort_keys=True)
        click.echo(f"{key:<{width}}  {'' if value is None else value}")


def table(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, list):
            return ",".join(map(str, value))
        return "-" if value in (None, "") else str(value)

    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def resource_commands(group: click.Group, path: str, key: str, columns: Sequence[str]) -> None:
    """``list``, ``show KEY`` and ``delete KEY`` for a resource at ``path``: the same
    three verbs read the same way for every noun."""
    noun = group.name

    @api_command(group, "list", help=f"List {noun}s.")
    def list_(ctx: Context) -> None:
        emit(ctx, ctx.api.get(path), columns, title=f"{noun}s")

    @api_command(group, "show", help=f"Show one {noun}.")
    @click.argument(key)
    def show(ctx: Context, **args: str) -> None:
        emit(ctx, ctx.api.get(f"{path}/{args[key]}"))

    @api_command(group, "delete", help=f"Delete a {noun}.")
    @click.argument(key)
    def delete(ctx: Context, **args: str) -> None:
        ctx.api.delete(f"{path}/{args[key]}")
        click.echo(f"deleted {noun} {args[key]}", err=True)
