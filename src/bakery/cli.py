"""The ``bakery`` command: run the service, and drive it over its API.

One group per noun (``pi``, ``bakeform``, ``disk``, ``token``) plus the verbs a
Pi user types most (``bake``, ``unbake``, ``fridge``, ``oven``). Tables for people,
``--json`` for scripts; an error is one line on stderr and exit status 1.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from .client import ApiClient, ApiError

DEFAULT_URL = "http://127.0.0.1:8080"


@dataclass
class Context:
    url: str = DEFAULT_URL
    token: str | None = None
    json: bool = False

    @functools.cached_property
    def api(self) -> ApiClient:
        return ApiClient(self.url, self.token)


def default_token() -> str | None:
    """The admin token the first start wrote, when this user can read it."""
    path = Path(os.environ.get("BAKERY_ROOT", "data")) / "admin-token"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def json_option(command: Callable) -> Callable:
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


def api_command(group: click.Group, *args: Any, **kwargs: Any) -> Callable:
    """A subcommand that talks to the API: gets the context, turns API errors into
    one-line failures, and accepts ``--json``."""

    def decorate(func: Callable) -> Callable:
        @functools.wraps(func)
        def run(*a: Any, **kw: Any) -> Any:
            try:
                return func(click.get_current_context().find_object(Context), *a, **kw)
            except ApiError as exc:
                raise click.ClickException(str(exc)) from None

        return group.command(*args, **kwargs)(json_option(run))

    return decorate


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


def table(rows: list[dict], columns: Sequence[str]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, list):
            return ",".join(map(str, value))
        return "-" if value in (None, "") else str(value)

    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--url",
    envvar="BAKERY_URL",
    default=DEFAULT_URL,
    show_default=True,
    help="Bakery API address (env BAKERY_URL).",
)
@click.option(
    "--token",
    envvar="BAKERY_TOKEN",
    help="API token (env BAKERY_TOKEN; default: $BAKERY_ROOT/admin-token if readable).",
)
@json_option
@click.pass_context
def main(ctx: click.Context, url: str, token: str | None) -> None:
    """Bakery: Raspberry Pi as a Service."""
    state = ctx.ensure_object(Context)
    state.url, state.token = url, token or default_token()


# -- the service --------------------------------------------------------------------------

config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    envvar="BAKERY_CONFIG",
    help="JSON settings file (env BAKERY_CONFIG).",
)
root_option = click.option(
    "--root", type=click.Path(file_okay=False), help="Data directory (env BAKERY_ROOT)."
)


def service_settings(config_file: str | None, **overrides: Any):
    """The settings a service command runs on; a bad one is a one-line error. Logging
    is set up here too, once, at the level the settings ask for."""
    import logging

    from .config import ConfigError, load_settings

    try:
        settings = load_settings(config_file, **overrides)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    logging.basicConfig(
        level=settings.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return settings


@main.command()
@config_option
@click.option("--bind", help="host:port to listen on (default from settings).")
@click.option("--workers", type=int, help="gunicorn worker processes.")
@root_option
def serve(config_file: str | None, bind: str | None, workers: int | None, root: str | None) -> None:
    """Run the API under gunicorn, ready for production."""
    from .serve import run

    run(service_settings(config_file, bind=bind, workers=workers, root=root))


@main.command("dnsmasq-config")
@config_option
@click.option(
    "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here, not stdout."
)
def dnsmasq_config(config_file: str | None, output: Path | None) -> None:
    """Print the dnsmasq proxy-DHCP configuration for the Pis, from the settings."""
    from .netboot.dnsmasq import render_config

    try:
        text = render_config(service_settings(config_file))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text)


@main.command()
@config_option
@click.option("--bind", help="ip:port to serve TFTP on (default: setting tftp_bind).")
@click.option(
    "--workers",
    type=click.IntRange(1),
    help="Processes sharing the port (SO_REUSEPORT; default: setting tftp_workers).",
)
@root_option
def tftp(config_file: str | None, bind: str | None, workers: int | None, root: str | None) -> None:
    """Serve Pi boot files over TFTP in the foreground (``serve`` runs it too)."""
    from .netboot.tftp import run_tftp

    settings = service_settings(config_file, tftp_bind=bind, root=root, tftp_workers=workers)
    try:
        run_tftp(settings, workers=settings.tftp_workers)
    except OSError as exc:
        host, port = settings.tftp_address
        raise click.ClickException(f"TFTP on {host}:{port}: {exc.strerror}") from None


@main.command()
@config_option
@click.option("--with-parent", is_flag=True, help="Stop when standard input closes.")
def netboot(config_file: str | None, with_parent: bool) -> None:
    """Run the TFTP server and dnsmasq, supervised (``serve`` runs this too)."""
    from .netboot.service import run_netboot

    try:
        run_netboot(service_settings(config_file), parent=sys.stdin if with_parent else None)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


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


# -- bakeforms ----------------------------------------------------------------------------


@main.group()
def bakeform() -> None:
    """OS images Pis can boot."""


BAKEFORM_COLUMNS = ("name", "compression", "size", "clone_method", "sha256", "created_at")


@api_command(bakeform, "upload")
@click.argument("name")
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--replace", is_flag=True, help="Replace an existing bakeform of that name.")
def bakeform_upload(ctx: Context, name: str, image: Path, replace: bool) -> None:
    """Upload IMAGE (.img, .img.xz or .img.gz) as bakeform NAME."""
    size = image.stat().st_size
    with click.progressbar(length=size, label=f"uploading {image.name}", file=sys.stderr) as bar:
        result = ctx.api.upload(f"/bakeforms/{name}", image, replace=replace, progress=bar.update)
    emit(ctx, result)


resource_commands(bakeform, "/bakeforms", "name", BAKEFORM_COLUMNS)


# -- Pis ----------------------------------------------------------------------------------


@main.group()
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
)


def parse_settings(pairs: Sequence[str], raw: str | None) -> dict | None:
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


def pi_options(func: Callable) -> Callable:
    for option in reversed(
        [
            click.option("--mac", help="Ethernet MAC address."),
            click.option("--model", help="3B, 3B+, 4B, 400, CM4, 5, CM5, 500."),
            click.option("--ip", help="Address the Pi boots from (learned from TFTP otherwise)."),
            click.option("--label", "labels", multiple=True, help="A label (repeatable)."),
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


def pi_body(mac, model, ip, labels, power_driver, power_pairs, power_json) -> dict:
    body = {
        "mac": mac,
        "model": model,
        "ip": ip,
        "labels": list(labels) or None,
        "power_driver": power_driver,
        "power_settings": parse_settings(power_pairs, power_json),
    }
    return {k: v for k, v in body.items() if v is not None}


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
    emit(ctx, events, ("created_at", "kind", "message"), title="events")


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


@api_command(main, "fridge")
def fridge(ctx: Context) -> None:
    """Pis available for a bake."""
    emit(ctx, ctx.api.get("/pis", state="available"), PI_COLUMNS, title="available Pis")


# -- bakes --------------------------------------------------------------------------------

BAKE_COLUMNS = ("id", "serial", "ip", "bakeform", "state", "hostname", "created_at")


@api_command(main, "bake")
@click.argument("bakeform_name", metavar="BAKEFORM")
@click.option("--serial", help="Bake this Pi (default: any free one).")
@click.option("--label", "labels", multiple=True, help="Bake a Pi with this label (repeatable).")
@click.option("--model", help="Bake a Pi of this model.")
@click.option("--hostname", help="Hostname (default pi-<serial>).")
def bake(ctx: Context, bakeform_name: str, serial, labels, model, hostname) -> None:
    """Bake BAKEFORM onto a free Pi and power it on."""
    body = {
        "bakeform": bakeform_name,
        "serial": serial,
        "labels": list(labels),
        "model": model,
        "hostname": hostname,
    }
    emit(ctx, ctx.api.post("/bakes", {k: v for k, v in body.items() if v is not None}))


@api_command(main, "unbake")
@click.argument("bake_id")
def unbake(ctx: Context, bake_id: str) -> None:
    """Power the Pi off, delete its root and free it."""
    emit(ctx, ctx.api.delete(f"/bakes/{bake_id}"))


@api_command(main, "oven")
@click.option("--all", "show_all", is_flag=True, help="Include unbaked bakes.")
def oven(ctx: Context, show_all: bool) -> None:
    """Live bakes."""
    rows = ctx.api.get("/bakes", all="true" if show_all else None)
    emit(ctx, rows, BAKE_COLUMNS, title="bakes")


# -- simulated Pis -----------------------------------------------------------------------

SIM_COLUMNS = ("serial", "model", "address", "state", "boot", "hostname", "reason")


@main.group("sim")
def sim_group() -> None:
    """Simulated Pis: the demo fleet, and what its Pis see while booting."""


@sim_group.command("run")
@click.option("--pis", "count", type=click.IntRange(1, 1000), default=4, show_default=True)
@click.option(
    "--mode",
    type=click.Choice(["auto", "loopback", "netns"]),
    default="auto",
    show_default=True,
    help="netns (root: bridge, namespaces, dnsmasq, nfs-ganesha) or loopback; auto picks.",
)
@click.option("--root", envvar="BAKERY_ROOT", default="data", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@click.option("--power-port", type=click.IntRange(1, 65535), default=8181, show_default=True)
@click.option(
    "--tftp-bind",
    envvar="BAKERY_TFTP_BIND",
    default="",
    help="Loopback mode's TFTP address (default 127.0.0.1:69 as root, else :6969).",
)
def sim_run(count: int, mode: str, root: str, port: int, power_port: int, tftp_bind: str) -> None:
    """Bakery on embedded defaults with COUNT simulated Pis enrolled and bakeform
    ``demo``, until Ctrl-C."""
    from .sim.demo import run_demo

    try:
        run_demo(count, mode, Path(root), port, power_port, tftp_bind)
    except (OSError, RuntimeError, ValueError, ApiError) as exc:
        raise click.ClickException(str(exc)) from None


@sim_group.command("status")
@click.option(
    "--sim-url",
    envvar="BAKERY_SIM_URL",
    default="http://127.0.0.1:8181",
    show_default=True,
    help="The simulator's power API (env BAKERY_SIM_URL).",
)
@json_option
def sim_status(sim_url: str) -> None:
    """Every simulated Pi: power, boot state, and why a boot failed."""
    from .sim.demo import fetch_status

    ctx = click.get_current_context().find_object(Context)
    try:
        emit(ctx, fetch_status(sim_url), SIM_COLUMNS, title="simulated Pis")
    except OSError as exc:  # requests' errors included
        raise click.ClickException(str(exc)) from None


# -- disks --------------------------------------------------------------------------------


@main.group()
def disk() -> None:
    """Sparse disks for bakes."""


DISK_COLUMNS = ("id", "size_mib", "bake_id", "ephemeral", "created_at")


@api_command(disk, "create")
@click.argument("size_mib", type=click.IntRange(min=1))
@click.option("--bake", "bake_id", help="Attach to this bake at once.")
def disk_create(ctx: Context, size_mib: int, bake_id: str | None) -> None:
    """Create a disk of SIZE_MIB MiB."""
    body = {"size_mib": size_mib, **({"bake_id": bake_id} if bake_id else {})}
    emit(ctx, ctx.api.post("/disks", body))


resource_commands(disk, "/disks", "disk_id", DISK_COLUMNS)


@api_command(disk, "attach")
@click.argument("disk_id")
@click.argument("bake_id")
def disk_attach(ctx: Context, disk_id: str, bake_id: str) -> None:
    emit(ctx, ctx.api.post(f"/disks/{disk_id}/attach", {"bake_id": bake_id}))


@api_command(disk, "detach")
@click.argument("disk_id")
def disk_detach(ctx: Context, disk_id: str) -> None:
    emit(ctx, ctx.api.post(f"/disks/{disk_id}/detach"))


@api_command(disk, "resize")
@click.argument("disk_id")
@click.argument("size_mib", type=click.IntRange(min=1))
def disk_resize(ctx: Context, disk_id: str, size_mib: int) -> None:
    """Grow a disk to SIZE_MIB MiB."""
    emit(ctx, ctx.api.post(f"/disks/{disk_id}/resize", {"size_mib": size_mib}))


# -- tokens -------------------------------------------------------------------------------


@main.group()
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


# -- stemcells ----------------------------------------------------------------------------


@main.group()
def stemcell() -> None:
    """BOSH stemcells for Bakery's CPI (built locally, no API involved)."""


@stemcell.command("build")
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--agent",
    "agent_binary",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The bosh-agent executable (arm64 for 64-bit Pi OS).",
)
@click.option("--name", required=True, help="Stemcell name, e.g. bosh-bakery-raspios-arm64.")
@click.option("--version", required=True, help="Stemcell version, e.g. 1.0.")
@click.option(
    "--api-version",
    type=click.Choice(["2", "3"]),
    default="3",
    show_default=True,
    help="Highest agent API the stemcell's bosh-agent speaks.",
)
@click.option("--os", "operating_system", default="raspios", show_default=True)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The stemcell tarball to write (.tgz).",
)
def stemcell_build(
    image: Path,
    agent_binary: Path,
    name: str,
    version: str,
    api_version: str,
    operating_system: str,
    output: Path,
) -> None:
    """Turn IMAGE (a Raspberry Pi OS .img, .img.xz or .img.gz) into a stemcell: the BOSH
    agent set to read the settings Bakery writes, and the disk agent, installed."""
    from .stemcell import StemcellError, build_stemcell

    try:
        build_stemcell(
            image,
            agent_binary,
            output,
            name=name,
            version=version,
            api_version=int(api_version),
            operating_system=operating_system,
        )
    except (StemcellError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote stemcell {name}/{version} to {output}", err=True)


if __name__ == "__main__":
    main()
