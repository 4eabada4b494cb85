"""``bakery stemcell build``: BOSH stemcells for Bakery's CPI, built locally."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
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
@click.option(
    "--monit-source",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="monit 5.2.5's source tarball, compiled for the image's architecture "
    "(cross-compiled for a Pi: needs gcc-aarch64-linux-gnu and libcrypt-dev:arm64).",
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
    monit_source: Path,
    name: str,
    version: str,
    api_version: str,
    operating_system: str,
    output: Path,
) -> None:
    """Turn IMAGE (a Raspberry Pi OS .img, .img.xz or .img.gz) into a stemcell: the BOSH
    agent set to read the settings Bakery writes, monit built for it, its user and
    services, and the disk agent, installed."""
    from ..stemcell import StemcellError, build_stemcell

    try:
        build_stemcell(
            image,
            agent_binary,
            output,
            monit_source=monit_source,
            name=name,
            version=version,
            api_version=int(api_version),
            operating_system=operating_system,
        )
    except (StemcellError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote stemcell {name}/{version} to {output}", err=True)
