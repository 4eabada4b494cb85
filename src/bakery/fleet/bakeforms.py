"""Bakeforms: an upload streamed into a staging directory, checked and extracted there,
then swapped in whole (replacing one of the same name if asked); deletion."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import IO

from .. import fsutil, identifiers, images, metrics, roots
from ..errors import Conflict, Forbidden, InvalidInput, TooLarge
from ..models import Bake, Bakeform, database, utcnow, write_transaction
from . import events
from .actors import new_owner, owner_scope
from .context import FleetContext
from .queries import get_bakeform
from .states import LIVE_BAKE_STATES


def name_taken(name: str) -> Conflict:
    """A new bakeform's name is in use: replacing it is for the caller to ask for."""
    return Conflict(f"a bakeform named {name!r} exists; upload it with replace=true to replace it")


def import_bakeform(
    ctx: FleetContext,
    name: str,
    stream: IO[bytes],
    *,
    replace: bool = False,
    progress: Callable[[int], None] | None = None,
    length: int | None = None,
) -> Bakeform:
    """Stream an upload into a staging dir, validate, extract, then swap it in.

    Nothing is visible (listed or cloned from) until the import has fully succeeded; a
    crash leaves only a staging dir, which recovery removes. An upload whose announced
    ``length`` is over ``max_upload_mib`` is refused before any of it is read."""
    limit = ctx.settings.max_upload_mib * 1024 * 1024
    if length is not None and length > limit:
        raise TooLarge(f"upload of {length} bytes exceeds the {limit}-byte limit")
    try:
        identifiers.name(name, "bakeform name")
    except identifiers.InvalidIdentifier as exc:
        raise InvalidInput(str(exc)) from None
    existing = Bakeform.get_or_none(Bakeform.name == name)
    if existing and not replace:
        raise name_taken(name)
    if existing:
        _check_owner(existing)  # before the upload is read, and again when swapping in
    staging = ctx.settings.path("bakeforms", fsutil.staging_name())
    staging.mkdir(parents=True)
    try:
        with metrics.bakeform_import():
            clone_method = roots.create_base(staging / "root")
            imported = images.import_image(
                stream,
                staging,
                max_bytes=limit,
                progress=progress,
            )
            return _install(ctx, name, staging, imported, clone_method, replace)
    except images.UploadTooLarge as exc:
        raise TooLarge(str(exc)) from None
    except images.ImageError as exc:
        raise InvalidInput(str(exc), code=exc.code) from None
    finally:
        roots.delete_tree(staging)


def _install(
    ctx: FleetContext,
    name: str,
    staging: Path,
    imported: images.ImportedImage,
    clone_method: str,
    replace: bool,
) -> Bakeform:
    final = ctx.bakeform_dir(name)
    trash = final.with_name(fsutil.trash_name())
    fields = dict(
        sha256=imported.sha256,
        size=imported.size,
        image_size=imported.image_size,
        compression=imported.compression,
        cmdline=imported.cmdline,
        clone_method=clone_method,
        created_at=utcnow(),
    )
    with ctx.lock("bakeforms"), write_transaction():
        existing = Bakeform.get_or_none(Bakeform.name == name)
        if existing and not replace:
            raise name_taken(name)
        if existing:
            _check_owner(existing)
        if final.exists():
            os.rename(final, trash)
        os.rename(staging, final)
        if existing:
            Bakeform.update(**fields).where(Bakeform.id == existing.id).execute()
        else:
            Bakeform.create(name=name, owner=new_owner(), **fields)
    roots.delete_tree(trash)
    events.record(None, "bakeform", f"bakeform {name} imported", sha256=imported.sha256)
    return Bakeform.get(Bakeform.name == name)


def delete_bakeform(ctx: FleetContext, name: str) -> None:
    """Delete a bakeform no live bake uses."""
    bakeform = get_bakeform(name)
    _check_owner(bakeform)
    live = Bake.select().where(Bake.bakeform == bakeform, Bake.state.in_(LIVE_BAKE_STATES))
    if live.exists():
        raise Conflict(f"bakeform {name} is used by bake {live.first().id}")
    directory = ctx.bakeform_dir(name)
    trash = directory.with_name(fsutil.trash_name())
    with ctx.lock("bakeforms"), database.atomic():
        bakeform.delete_instance()
        if directory.exists():
            os.rename(directory, trash)
    roots.delete_tree(trash)
    events.record(None, "bakeform", f"bakeform {name} deleted")


def _check_owner(bakeform: Bakeform) -> None:
    """Every token may bake any bakeform, but only its owner (or an admin) replaces or
    deletes it: one director's stemcell is not another's to take away."""
    scope = owner_scope()
    if scope is not None and bakeform.owner != scope:
        raise Forbidden(f"bakeform {bakeform.name} belongs to another owner")
