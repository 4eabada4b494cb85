"""The service commands: ``serve`` (the API under gunicorn), ``tftp``, ``http-boot``,
``netboot``, ``metrics``, ``dnsmasq-config``, ``http-boot-key`` and ``restore-power``; a bad
setting stops them with one line. Each command that serves counts in the data dir's
metrics directory (``counted``), so ``/metrics`` shows it whoever started it."""

from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from ..config import Settings

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


def service_settings(config_file: str | None, **overrides: Any) -> Settings:
    """The settings a service command runs on; a bad one is a one-line error. Logging
    is set up here too, once, at the level the settings ask for, and the umask that
    keeps what the service makes in the data dir its own."""
    import logging

    from ..config import ConfigError, load_settings
    from ..datadir import use_private_umask

    use_private_umask()

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


def counted(settings: Settings) -> Settings:
    """Join the data dir's metrics directory before anything is counted, so what this
    process counts reaches every scrape (``bakery serve`` joins it in ``prepare_host``,
    after emptying it, and its children inherit it; joining again is harmless)."""
    from .. import metrics
    from ..config import ConfigError

    try:
        metrics.use_directory(metrics.directory_of(settings))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    return settings


@click.command()
@config_option
@click.option("--bind", help="host:port to listen on (default from settings).")
@click.option("--workers", type=int, help="gunicorn worker processes.")
@root_option
def serve(config_file: str | None, bind: str | None, workers: int | None, root: str | None) -> None:
    """Run the API under gunicorn, ready for production."""
    from ..config import ConfigError
    from ..errors import Conflict
    from ..serve import run

    settings = service_settings(config_file, bind=bind, workers=workers, root=root)
    try:
        run(settings)
    except (ConfigError, Conflict) as exc:  # a data dir others can enter; a host_id in use
        raise click.ClickException(str(exc)) from None


@click.command("dnsmasq-config")
@config_option
@click.option(
    "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here, not stdout."
)
def dnsmasq_config(config_file: str | None, output: Path | None) -> None:
    """Print the dnsmasq proxy-DHCP configuration for the Pis, from the settings."""
    from ..netboot.dnsmasq import render_config

    try:
        text = render_config(service_settings(config_file))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text)


@click.command()
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
    from ..fleet import FleetBootSource
    from ..netboot.tftp import run_tftp

    settings = counted(
        service_settings(config_file, tftp_bind=bind, root=root, tftp_workers=workers)
    )
    try:
        run_tftp(settings, FleetBootSource.open, workers=settings.tftp_workers)
    except OSError as exc:
        host, port = settings.tftp_address
        raise click.ClickException(f"TFTP on {host}:{port}: {exc.strerror}") from None


@click.command("http-boot")
@config_option
@click.option("--bind", help="ip:port to serve HTTP boot on (default: setting http_boot_bind).")
@root_option
def http_boot(config_file: str | None, bind: str | None, root: str | None) -> None:
    """Serve each HTTP-booting Pi its bake's signed boot.img (``serve`` runs it too)."""
    from ..fleet import FleetBootSource
    from ..netboot.bootimage import BootImageError
    from ..netboot.httpboot import run_http_boot

    settings = counted(service_settings(config_file, http_boot_bind=bind, root=root))
    try:
        run_http_boot(settings, FleetBootSource.open)
    except (ValueError, BootImageError) as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(
            f"HTTP boot on {settings.http_boot_bind}: {exc.strerror}"
        ) from None


@click.command()
@config_option
@click.option("--bind", help="ip:port to receive on (default: setting netconsole_bind).")
@root_option
def netconsole(config_file: str | None, bind: str | None, root: str | None) -> None:
    """Receive Pi bootloader logs (EEPROM NETCONSOLE) and file them under each Pi
    (``serve`` runs it too)."""
    from ..fleet import FleetBootSource
    from ..netboot.netconsole import run_netconsole

    settings = counted(service_settings(config_file, netconsole_bind=bind, root=root))
    try:
        run_netconsole(settings, FleetBootSource.open)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(
            f"netconsole on {settings.netconsole_bind}: {exc.strerror}"
        ) from None


@click.command("metrics")
@config_option
@click.option("--bind", help="ip:port to serve metrics on (default: setting metrics_bind).")
@root_option
def metrics_server(config_file: str | None, bind: str | None, root: str | None) -> None:
    """Serve Prometheus metrics without a token, for a monitoring network (``serve`` runs
    it too when ``metrics_bind`` is set); the API's ``/metrics`` asks for a token."""
    from .. import metrics, models
    from ..fleet import Fleet

    settings = counted(service_settings(config_file, metrics_bind=bind, root=root))
    if settings.metrics_address is None:
        raise click.ClickException("setting 'metrics_bind' is empty: give --bind")
    models.connect(settings.database)
    models.create_schema()
    try:
        metrics.run_metrics_server(settings.metrics_address, [Fleet(settings).gauges()])
    except OSError as exc:
        raise click.ClickException(f"metrics on {settings.metrics_bind}: {exc.strerror}") from None


@click.command("http-boot-key")
@config_option
@root_option
def http_boot_key(config_file: str | None, root: str | None) -> None:
    """Print the public key that verifies boot.img signatures, making the signing key
    first if there is none: give it to ``rpi-eeprom-config --pubkey`` for each Pi."""
    from ..netboot.bootimage import BootImageError, ensure_key, public_key_pem

    settings = service_settings(config_file, root=root)
    try:
        ensure_key(settings.http_boot_key_path)
        click.echo(public_key_pem(settings.http_boot_key_path), nl=False)
    except BootImageError as exc:
        raise click.ClickException(str(exc)) from None


@click.command()
@config_option
@click.option("--with-parent", is_flag=True, help="Stop when standard input closes.")
def netboot(config_file: str | None, with_parent: bool) -> None:
    """Run the TFTP and HTTP boot servers and dnsmasq, supervised (``serve`` runs this too)."""
    from ..fleet import FleetBootSource
    from ..netboot.service import run_netboot

    try:
        settings = counted(service_settings(config_file))
        run_netboot(settings, FleetBootSource.open, parent=sys.stdin if with_parent else None)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


@click.command("restore-power")
@config_option
@click.option(
    "--registered-before",
    type=click.DateTime(["%Y-%m-%dT%H:%M:%S.%f"]),
    help="Only Pis registered before this UTC time (serve passes its start).",
)
@click.option("--with-parent", is_flag=True, help="Stop when the process that started it does.")
def restore_power(
    config_file: str | None, registered_before: datetime | None, with_parent: bool
) -> None:
    """Bring each Pi to the power its state implies: baked on, available off (``serve``
    runs this at every start, in the background)."""
    from .. import models
    from ..fleet import Fleet
    from ..supervisor import die_with

    if with_parent:
        die_with(os.getppid())
    settings = counted(service_settings(config_file))
    models.connect(settings.database)
    with models.database.connection_context():
        Fleet(settings).restore_power(registered_before)
