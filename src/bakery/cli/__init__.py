"""The ``bakery`` command: run the service, and drive it over its API.

One group per noun (``pi``, ``bakeform``, ``disk``, ``token``) plus the verbs a
Pi user types most (``bake``, ``unbake``, ``fridge``, ``oven``). Tables for people,
``--json`` for scripts; an error is one line on stderr and exit status 1.

The modules: ``output`` (context, errors, tables), ``service`` (the service commands), and
one module per noun group.
"""

from __future__ import annotations

import click

from . import bakeforms, bakes, disks, hosts, pis, service, sim, stemcell, tokens
from .output import DEFAULT_URL, Context, default_token, json_option


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


for command in (
    service.serve,
    service.dnsmasq_config,
    service.tftp,
    service.http_boot,
    service.http_boot_key,
    service.netconsole,
    service.netboot,
    service.metrics_server,
    service.restore_power,
    bakeforms.bakeform,
    pis.pi,
    pis.fridge,
    bakes.bake,
    bakes.unbake,
    bakes.oven,
    sim.sim_group,
    disks.disk,
    tokens.token,
    hosts.host,
    stemcell.stemcell,
):
    main.add_command(command)
