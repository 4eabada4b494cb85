"""``bakery bakeform``: upload, list, show and delete OS images."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..client import ApiError
from .output import Context, api_command, emit, resource_commands


@click.group()
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

        def progress(count: int) -> None:
            bar.update(count)
            if bar.pos >= size:  # all sent: the server now checks and extracts the image
                bar.label = f"uploaded {image.name}; the server is extracting it"
                bar.render_progress()

        try:
            result = ctx.api.upload(f"/bakeforms/{name}", image, replace=replace, progress=progress)
        except ApiError as exc:
            if exc.status == 409 and not replace:
                raise ApiError(f"{exc}: add --replace", exc.status, exc.code) from None
            raise
    emit(ctx, result)


resource_commands(bakeform, "/bakeforms", "name", BAKEFORM_COLUMNS)
