"""Bakeforms: an upload streamed into a staging directory, checked and extracted there,
then swapped in whole (replacing one of the same name if asked); deletion."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, cast

from .. import fsutil, identifiers, images, metrics, roots
from ..errors import Conflict, Forbidden, InvalidInput, TooLarge
from ..models import (
    Bake,
    Bakeform,
    BakeformCopy,
    Pi,
    database,
    shared_database,
    utcnow,
    write_transaction,
)
from . import events
from .actors import new_owner, owner_scope
from .context import FleetContext
from .hosts import down_hosts
from .jobs import send
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
    with staged(ctx) as staging:
        upload = staging / UPLOAD_NAME if shared_database() else None
        imported, clone_method = extract(ctx, stream, staging, progress=progress, keep=upload)
        bakeform = _install(ctx, name, staging, imported, clone_method, replace)
    _tell_hosts(ctx, "copy_bakeform", name, _hosts_with_pis())
    return bakeform


def _hosts_with_pis() -> list[str]:
    owners = Pi.select(Pi.host).where(Pi.host.is_null(False)).distinct()
    return [pi.host for pi in owners if pi.host]


def _tell_hosts(ctx: FleetContext, kind: str, name: str, hosts: list[str]) -> None:
    """Send the other live ``hosts`` a job about bakeform ``name`` (its copy to make, or
    to drop), not waited for: a host that misses it makes its copy at its first bake of
    it, and drops a stale one at its next start."""
    if not shared_database():
        return
    skipped = down_hosts() | {ctx.settings.host_id}
    for host in sorted(set(hosts) - skipped):
        send(host, kind, {"name": name})


#: A bakeform's upload as it was received, kept in its directory by the host that
#: imported it when several hosts share the database: the others copy it from there.
UPLOAD_NAME = "upload"


@contextlib.contextmanager
def staged(ctx: FleetContext) -> Iterator[Path]:
    """A new staging directory for one import, deleted afterwards (after a successful
    one, it has been renamed into place and nothing is left to delete)."""
    staging = ctx.settings.path("bakeforms", fsutil.staging_name())
    staging.mkdir(parents=True)
    try:
        yield staging
    finally:
        roots.delete_tree(staging)


def extract(
    ctx: FleetContext,
    stream: IO[bytes],
    staging: Path,
    *,
    progress: Callable[[int], None] | None = None,
    keep: Path | None = None,
) -> tuple[images.ImportedImage, str]:
    """Receive an image into ``staging`` and extract its boot and root there (written
    to ``keep`` too, as received, when given); what was imported and the root's clone
    method. An upload over ``max_upload_mib`` is TooLarge, a bad image InvalidInput."""
    limit = ctx.settings.max_upload_mib * 1024 * 1024
    try:
        with metrics.bakeform_import(), _kept(stream, keep) as received:
            clone_method = roots.create_base(staging / "root")
            imported = images.import_image(received, staging, max_bytes=limit, progress=progress)
    except images.UploadTooLarge as exc:
        raise TooLarge(str(exc)) from None
    except images.ImageError as exc:
        raise InvalidInput(str(exc), code=exc.code) from None
    return imported, clone_method


@contextlib.contextmanager
def _kept(stream: IO[bytes], keep: Path | None) -> Iterator[IO[bytes]]:
    if keep is None:
        yield stream
        return
    with keep.open("wb") as copy:
        yield cast(IO[bytes], _Tee(stream, copy))
        copy.flush()
        os.fsync(copy.fileno())  # the other hosts check it against the sha256 recorded


class _Tee(io.RawIOBase):
    """Reads ``source``, writing what it read to ``copy`` as it goes."""

    def __init__(self, source: IO[bytes], copy: IO[bytes]) -> None:
        self.source = source
        self.copy = copy

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        chunk = self.source.read(size)
        self.copy.write(chunk)
        return chunk


def _install(
    ctx: FleetContext,
    name: str,
    staging: Path,
    imported: images.ImportedImage,
    clone_method: str,
    replace: bool,
) -> Bakeform:
    fields = dict(
        sha256=imported.sha256,
        size=imported.size,
        image_size=imported.image_size,
        compression=imported.compression,
        cmdline=imported.cmdline,
        clone_method=clone_method,
        source_host=ctx.settings.host_id,
        created_at=utcnow(),
    )
    with ctx.lock("bakeforms"), write_transaction():
        existing = Bakeform.get_or_none(Bakeform.name == name)
        if existing and not replace:
            raise name_taken(name)
        if existing:
            _check_owner(existing)
        trash = swap_in(ctx, name, staging)
        if existing:
            Bakeform.update(**fields).where(Bakeform.id == existing.id).execute()
        else:
            Bakeform.create(name=name, owner=new_owner(), **fields)
        bakeform = Bakeform.get(Bakeform.name == name)
        record_copy(ctx, bakeform, "ready", clone_method=clone_method)
    roots.delete_tree(trash)
    events.record(None, "bakeform", f"bakeform {name} imported", sha256=imported.sha256)
    return bakeform


def swap_in(ctx: FleetContext, name: str, staging: Path) -> Path:
    """Put a staged import in place of bakeform ``name``'s directory, in two renames
    (under the bakeforms lock); the old one's new path, for the caller to delete."""
    final = ctx.bakeform_dir(name)
    trash = final.with_name(fsutil.trash_name())
    if final.exists():
        os.rename(final, trash)
    os.rename(staging, final)
    return trash


def record_copy(
    ctx: FleetContext, bakeform: Bakeform, state: str, *, error: str = "", clone_method: str = ""
) -> None:
    """Say what this host's copy of ``bakeform`` is now (``ready``: of its current upload,
    cloned with ``clone_method``, what this host's data dir allows)."""
    fields = dict(sha256=bakeform.sha256, state=state, error=error[:2000], updated_at=utcnow())
    if clone_method:
        fields["clone_method"] = clone_method
    row = dict(bakeform=bakeform.id, host=ctx.settings.host_id, **fields)
    upsert = BakeformCopy.insert(**row).on_conflict(
        conflict_target=[BakeformCopy.bakeform, BakeformCopy.host], update=fields
    )
    upsert.execute()


def delete_bakeform(ctx: FleetContext, name: str) -> None:
    """Delete a bakeform no live bake uses."""
    bakeform = get_bakeform(name)
    _check_owner(bakeform)
    live = Bake.select().where(Bake.bakeform == bakeform, Bake.state.in_(LIVE_BAKE_STATES))
    if live.exists():
        raise Conflict(f"bakeform {name} is used by bake {live.first().id}")
    directory = ctx.bakeform_dir(name)
    trash = directory.with_name(fsutil.trash_name())
    copies = [copy.host for copy in BakeformCopy.select().where(BakeformCopy.bakeform == bakeform)]
    with ctx.lock("bakeforms"), database.atomic():
        bakeform.delete_instance()
        if directory.exists():
            os.rename(directory, trash)
    roots.delete_tree(trash)
    _tell_hosts(ctx, "drop_copy", name, copies)
    events.record(None, "bakeform", f"bakeform {name} deleted")


def _check_owner(bakeform: Bakeform) -> None:
    """Every token may bake any bakeform, but only its owner (or an admin) replaces or
    deletes it: one director's stemcell is not another's to take away."""
    scope = owner_scope()
    if scope is not None and bakeform.owner != scope:
        raise Forbidden(f"bakeform {bakeform.name} belongs to another owner")
