"""Bakeform copies: each host bakes from its own extracted copy of a bakeform.

A bakeform is imported on one host (its ``source_host``), which keeps the upload as it
was received. Every other host that bakes it makes its copy from that same upload: it
fetches it over HTTP from the source host's API (with its host token), checks its sha256
against the bakeform's, and extracts it as an import does. Copies are made when the
import is done (the importing host sends each live host with Pis a ``copy_bakeform``
job, not waited for) and, failing that, by the first bake that needs one, which waits
for it. A copy of an older upload (the bakeform was replaced) is made again the same way.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import IO, cast

import requests

from .. import fsutil, roots
from ..errors import BakeryError, NotFound, Unavailable
from ..models import Bakeform, BakeformCopy, Host, shared_database
from .bakeforms import UPLOAD_NAME, extract, record_copy, staged, swap_in
from .context import FleetContext
from .hosts import down_hosts, host_token
from .queries import get_bakeform

log = logging.getLogger(__name__)

#: Seconds to wait for the source host to start answering (connect, and each read).
FETCH_TIMEOUT = 60.0


class CopyFailed(Unavailable):
    code = "bakeform_copy_failed"


def ensure_copy(ctx: FleetContext, bakeform: Bakeform) -> None:
    """Return once this host holds a copy of ``bakeform``'s current upload, making it if
    it must (one maker per host at a time; the others wait for it)."""
    if _current(ctx, bakeform):
        return
    with ctx.lock(f"copy-{bakeform.name}"):
        bakeform = get_bakeform(bakeform.name)
        if not _current(ctx, bakeform):
            _make_copy(ctx, bakeform)


def clone_method(ctx: FleetContext, bakeform: Bakeform) -> roots.CloneMethod:
    """How this host clones roots from its copy of ``bakeform``: what its own data dir
    allowed when the copy was made (a snapshot on btrfs, a reflink on xfs, else a copy),
    not what the importing host's did."""
    copy = BakeformCopy.get_or_none(
        BakeformCopy.bakeform == bakeform.id, BakeformCopy.host == ctx.settings.host_id
    )
    # the columns only ever hold what roots.create_base chose (or the default "copy")
    return cast(roots.CloneMethod, copy.clone_method if copy else bakeform.clone_method)


def copy_bakeform(ctx: FleetContext, name: str) -> None:
    """A ``copy_bakeform`` job: make this host's copy now, not at its first bake."""
    ensure_copy(ctx, get_bakeform(name))


def _current(ctx: FleetContext, bakeform: Bakeform) -> bool:
    if not shared_database() or bakeform.source_host in (None, ctx.settings.host_id):
        return True  # SQLite: one host, its own bakeforms
    copy = BakeformCopy.get_or_none(
        BakeformCopy.bakeform == bakeform.id, BakeformCopy.host == ctx.settings.host_id
    )
    return copy is not None and copy.state == "ready" and copy.sha256 == bakeform.sha256


def _make_copy(ctx: FleetContext, bakeform: Bakeform) -> None:
    log.info("copying bakeform %s from host %s", bakeform.name, bakeform.source_host)
    record_copy(ctx, bakeform, "copying")
    try:
        with staged(ctx) as staging, _fetch(ctx, bakeform) as upload:
            imported, clone_method = extract(ctx, cast(IO[bytes], upload.raw), staging)
            if imported.sha256 != bakeform.sha256:
                raise CopyFailed(
                    f"the upload host {bakeform.source_host} sent for bakeform {bakeform.name} "
                    "is not the one imported (sha256 differs): it was replaced meanwhile"
                )
            with ctx.lock("bakeforms"):
                trash = swap_in(ctx, bakeform.name, staging)
    except (BakeryError, OSError, requests.RequestException) as exc:
        record_copy(ctx, bakeform, "failed", error=str(exc))
        if isinstance(exc, BakeryError):
            raise
        raise CopyFailed(f"could not copy bakeform {bakeform.name}: {exc}") from None
    roots.delete_tree(trash)
    record_copy(ctx, bakeform, "ready", clone_method=clone_method)


def _fetch(ctx: FleetContext, bakeform: Bakeform) -> requests.Response:
    """The bakeform's upload, streaming from its source host's API."""
    source = Host.get_or_none(Host.name == bakeform.source_host)
    if source is None or source.name in down_hosts():
        raise CopyFailed(
            f"bakeform {bakeform.name} is on host {bakeform.source_host!r}, which is down: "
            "this host can bake it once that host is back"
        )
    answer = requests.get(
        f"{source.url}/api/v1/bakeforms/{bakeform.name}/{UPLOAD_NAME}",
        headers={"Authorization": f"Bearer {host_token(ctx)}"},
        stream=True,
        timeout=FETCH_TIMEOUT,
        verify=ctx.settings.host_ca_file or True,
    )
    if answer.status_code != 200:
        said = answer.raw.read(200).decode(errors="replace")  # no more: a source may lie
        answer.close()
        raise CopyFailed(
            f"host {source.name} answered {answer.status_code} for bakeform "
            f"{bakeform.name}'s upload: {said}"
        )
    answer.raw.decode_content = True
    return answer


def drop_copy(ctx: FleetContext, name: str) -> None:
    """A ``drop_copy`` job: bakeform ``name`` was deleted on its source host; delete this
    host's copy (unless it has been imported again meanwhile)."""
    with ctx.lock("bakeforms"):
        if Bakeform.get_or_none(Bakeform.name == name) is not None:
            return
        directory = ctx.bakeform_dir(name)
        if not directory.exists():
            return
        trash = directory.with_name(fsutil.trash_name())
        os.rename(directory, trash)
    roots.delete_tree(trash)


def upload_of(ctx: FleetContext, name: str) -> Path:
    """The kept upload of a bakeform this host imported; NotFound on any other host."""
    bakeform = get_bakeform(name)
    path = ctx.bakeform_dir(bakeform.name) / UPLOAD_NAME
    if bakeform.source_host != ctx.settings.host_id or not path.is_file():
        raise NotFound(
            f"host {ctx.settings.host_id} does not keep bakeform {name}'s upload: "
            f"{bakeform.source_host or 'no host'} does",
            code="upload_not_here",
        )
    return path


def where(bakeform: Bakeform) -> dict[str, str]:
    """Each host's copy of ``bakeform``: ready, copying, failed or stale (of an older
    upload); its source host's is ready."""
    found = {
        copy.host: copy.state if copy.sha256 == bakeform.sha256 else "stale"
        for copy in BakeformCopy.select().where(BakeformCopy.bakeform == bakeform.id)
    }
    if bakeform.source_host:
        found[bakeform.source_host] = "ready"
    return dict(sorted(found.items()))
