"""Start-up recovery: finish or undo what a crash interrupted, then remove files no row
owns, so a crash at any point leaves nothing half-made behind."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

from .. import disks, fsutil, roots
from ..models import Bake, Bakeform, BakeState, Disk, Pi, PiState, Snapshot
from .bakes import best_effort, finish_unbake, free_pi, roll_back
from .context import FleetContext
from .exports import publish_exports
from .jobs import recover_jobs
from .queries import live_bake_of
from .states import LIVE_BAKE_STATES, move_pi


def recover(ctx: FleetContext) -> dict[str, int]:
    """Bakes this host was preparing are rolled back (the director or user retries);
    unbakes are finished (the user asked for them). Files no row owns are deleted.
    Exports are rewritten from the database.

    Every item is best effort: one that cannot be recovered is logged and left for the
    next start, and the service starts anyway (a fleet half-recovered still serves)."""
    mine = Bake.host_id == ctx.settings.host_id
    my_pis = (Pi.host == ctx.settings.host_id) | Pi.host.is_null()
    counts = {"rolled_back": 0, "unbaked": 0, "stray_paths": 0, "failed": 0}
    counts["jobs_failed"] = recover_jobs(ctx)

    def attempt(step: Callable[[], object], what: str, counted: str | None = None) -> None:
        if not best_effort(step, what):
            counts["failed"] += 1
        elif counted:
            counts[counted] += 1

    for bake in Bake.select().where(mine, Bake.state == BakeState.PREPARING.value):
        attempt(
            partial(roll_back, ctx, bake, "interrupted by a restart"),
            f"recovery of bake {bake.id}",
            "rolled_back",
        )
    for bake in Bake.select().where(mine, Bake.state == BakeState.UNBAKING.value):
        attempt(partial(finish_unbake, ctx, bake), f"recovery of bake {bake.id}", "unbaked")
    for pi in Pi.select().where(my_pis, Pi.bake_id.is_null(False)):
        attempt(partial(_free_if_bake_gone, pi), f"recovery of Pi {pi.serial}")
    for pi in Pi.select().where(my_pis, Pi.state == PiState.PREPARING.value, Pi.bake_id.is_null()):
        attempt(
            partial(move_pi, pi, PiState.AVAILABLE, "claim without a bake"),
            f"recovery of Pi {pi.serial}",
        )
    for bake in Bake.select().where(mine, Bake.state == BakeState.BAKED.value):
        attempt(partial(_give_boot_files, ctx, bake), f"boot files of bake {bake.id}")
    for path in _stray_paths(ctx):
        attempt(partial(roots.delete_tree, path), f"removal of {path}", "stray_paths")
    attempt(partial(publish_exports, ctx), "publishing the exports")
    return counts


def _free_if_bake_gone(pi: Pi) -> None:
    if live_bake_of(pi) is None:
        dead = Bake.get_or_none(Bake.id == pi.bake_id) or Bake(id=pi.bake_id)
        free_pi(pi, dead, PiState.AVAILABLE, "its bake is gone")


def _give_boot_files(ctx: FleetContext, bake: Bake) -> None:
    """Bakes made before bakes had boot files of their own get them (from their bakeform
    as it is now) the first time a release with them starts."""
    if ctx.bake_boot(bake.id).exists() or not ctx.bake_root(bake.id).exists():
        return
    with ctx.lock("bakeforms", shared=True):
        boot = ctx.bakeform_dir(bake.bakeform_name) / "boot"
        roots.clone_boot(boot, ctx.bake_boot(bake.id))


def _stray_paths(ctx: FleetContext) -> Iterator[Path]:
    live_bakes = {b.id for b in Bake.select(Bake.id).where(Bake.state.in_(LIVE_BAKE_STATES))}
    yield from fsutil.strays(ctx.settings.path("bakes"), live_bakes)
    forms = {b.name for b in Bakeform.select(Bakeform.name)}
    yield from fsutil.strays(ctx.settings.path("bakeforms"), forms)
    yield from fsutil.strays(disks.disks_dir(ctx.settings), {d.id for d in Disk.select(Disk.id)})
    yield from fsutil.strays(
        ctx.settings.path("snapshots"), {s.id for s in Snapshot.select(Snapshot.id)}
    )
