"""``bakery sim``: the demo fleet of simulated Pis, and what its Pis see while booting."""

from __future__ import annotations

from pathlib import Path

import click

from ..client import ApiError
from .output import Context, emit, json_option

SIM_COLUMNS = ("serial", "model", "address", "state", "boot", "hostname", "reason")


@click.group("sim")
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
@click.option(
    "--http-boot",
    is_flag=True,
    help="Pi 4s and 5s boot a signed boot.img over HTTP (Bakery's key in their EEPROMs).",
)
@click.option(
    "--netconsole",
    is_flag=True,
    help="Pi 4s and 5s send their bootloader log to Bakery (EEPROM NETCONSOLE).",
)
def sim_run(
    count: int,
    mode: str,
    root: str,
    port: int,
    power_port: int,
    tftp_bind: str,
    http_boot: bool,
    netconsole: bool,
) -> None:
    """Bakery on embedded defaults with COUNT simulated Pis enrolled and bakeform
    ``demo``, until Ctrl-C."""
    from ..sim.demo import run_demo

    try:
        run_demo(count, mode, Path(root), port, power_port, tftp_bind, http_boot, netconsole)
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
    from ..sim.demo import fetch_status

    ctx = click.get_current_context().find_object(Context)
    assert ctx is not None  # the bakery group (or --json) always makes one
    try:
        emit(ctx, fetch_status(sim_url), SIM_COLUMNS, title="simulated Pis")
    except OSError as exc:  # requests' errors included
        raise click.ClickException(str(exc)) from None
