"""Bakes: claim → clone root → season → export → power on, any failure undoing every step
already done; unbake; and what a live bake can be given (agent settings, metadata)."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from .. import exports, fsutil, identifiers, metrics, roots, stemcell
from ..errors import Conflict, InvalidInput, NotFound, PowerFailed, StorageFailed
from ..models import Bake, Bakeform, BakeState, Disk, Pi, PiState, database, utcnow
from ..power import PowerAction, PowerError, PowerResult
from ..redaction import redacted
from . import events
from .allocation import claim
from .bakefiles import (
    agent_settings,
    bake_lock,
    caller_bake,
    forget_bake_lock,
    give_secret,
    writable_bake,
    write_bake_files,
)
from .context import FleetContext
from .copies import clone_method, ensure_copy
from .disks import attach, release_disks
from .exports import publish_exports
from .pis import check_boot_protocol
from .power import operator_power, power_pi
from .queries import get_bakeform, get_disk, get_live_bake
from .states import move_bake, move_pi, pi_move_allowed

log = logging.getLogger(__name__)


def bake(
    ctx: FleetContext,
    bakeform_name: str,
    *,
    serial: str | None = None,
    labels: Sequence[str] = (),
    model: str | None = None,
    hostname: str | None = None,
    agent_settings: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
    disk_ids: Sequence[str] = (),
    near_disks: Sequence[str] = (),
    power_on: bool = True,
    user_data: str | None = None,
    boot_protocol: str | None = None,
) -> Bake:
    """Put a bakeform on a free Pi and power it on; undo everything on failure.

    ``disk_ids`` are detached disks to attach before the Pi powers on. ``near_disks`` are
    disks it will be given later (BOSH's persistent disk of a recreated VM): a placement
    hint ``fleet.forwarding`` reads to choose the host, where only they can be attached. With
    ``power_on=False`` the bake is complete but the Pi stays off until ``power_bake``: a
    client can first write settings that name the bake or the Pi. ``user_data`` (cloud-init)
    goes into the root's seed and nowhere else: it may hold secrets. ``boot_protocol``
    (default: the Pi's) ``http`` has the Pi served a signed boot.img over HTTP too."""
    started = time.monotonic()
    _check_user_data(user_data)
    if boot_protocol is not None:
        check_boot_protocol(ctx, boot_protocol, model)
    bakeform = get_bakeform(bakeform_name)
    if hostname is not None:
        try:
            identifiers.hostname(hostname)
        except identifiers.InvalidIdentifier as exc:
            raise InvalidInput(str(exc)) from None
    for disk_id in disk_ids:
        if get_disk(disk_id).bake_id:
            raise Conflict(f"disk {disk_id} is attached to another bake")
    claimed = claim(
        ctx,
        bakeform,
        serial=serial,
        labels=labels,
        model=model,
        hostname=hostname,
        agent_settings=agent_settings,
        metadata=metadata,
        boot_protocol=boot_protocol,
    )
    metrics.bake_started()
    try:
        baked = _prepare(ctx, claimed, bakeform, disk_ids, power_on, user_data)
    except BaseException as exc:
        roll_back(ctx, claimed, f"{type(exc).__name__}: {exc}")
        raise _as_user_error(exc) from None
    metrics.bake_done(time.monotonic() - started)
    return baked


def _check_user_data(user_data: str | None) -> None:
    if user_data is None:
        return
    try:
        roots.check_user_data(user_data)
    except ValueError as exc:
        raise InvalidInput.of_field("user_data", f"user-data {exc}") from None


def _prepare(
    ctx: FleetContext,
    bake: Bake,
    bakeform: Bakeform,
    disk_ids: Sequence[str],
    power_on: bool,
    user_data: str | None,
) -> Bake:
    pi = bake.pi
    check_boot_protocol(ctx, bake.boot_protocol, pi.model)  # the settings may have changed
    ensure_copy(ctx, bakeform)  # this host's copy of it, made first if need be
    root = ctx.bake_root(bake.id)
    root.parent.mkdir(parents=True, exist_ok=True)
    source = ctx.bakeform_dir(bakeform.name)
    with ctx.lock("bakeforms", shared=True):  # root and boot of one import
        method = clone_method(ctx, bakeform)
        roots.clone_root(source / "root", root, method)
        roots.clone_boot(source / "boot", ctx.bake_boot(bake.id))
    _step(bake, "cloned", "root cloned", method=method)
    roots.season_root(root, hostname=bake.hostname, resolv_conf=ctx.settings.resolv_conf)
    stemcell.install_disk_agent(root, ctx.settings.disks_list_path)
    stemcell.install_boot_report(root, ctx.settings.api_url_for_pis, ctx.settings.bake_secret_path)
    give_secret(ctx, bake)
    seeded = roots.seed_cloud_init(
        root, instance_id=bake.id, hostname=bake.hostname, user_data=user_data
    )
    _step(bake, "seasoned", "root seasoned", hostname=bake.hostname, cloud_init_seed=seeded)
    for disk_id in disk_ids:
        attach(Disk.get_by_id(disk_id), bake)
    write_bake_files(ctx, bake)
    publish_exports(ctx)
    _step(bake, "exported", "root exported", ip=pi.last_ip)
    if power_on:
        _step(bake, "powering_on", "powering on")
        power_pi(ctx, pi, "on")
        _step(bake, "powered_on", "powered on")
    with database.atomic():
        baked = move_bake(bake, BakeState.BAKED)
        move_pi(pi, PiState.BAKED, expect=PiState.PREPARING)
    return baked


def _step(bake: Bake, step: str, message: str, **data: Any) -> None:
    """Journal a bake step, so a rollback knows what to undo, and show it in the timeline."""
    Bake.update(step=step).where(Bake.id == bake.id).execute()
    bake.step = step
    events.record(bake.pi, "bake", message, bake.id, **data)


def roll_back(ctx: FleetContext, bake: Bake, reason: str) -> None:
    """Undo a bake that never became ``baked``: power, exports, disks, root, claim.

    Every step is attempted even if one before it fails (logged), so the Pi is always
    handed back; what could not be cleaned, recovery cleans at the next start."""
    log.warning("rolling back bake %s: %s", bake.id, reason)
    pi = Pi.get_by_id(bake.pi_id)
    failed = move_bake(
        Bake.get_by_id(bake.id), BakeState.FAILED, error=reason[:2000], finished_at=utcnow()
    )
    metrics.bake_failed(failed.step)
    steps: list[Callable[[], object]] = [
        lambda: release_disks(ctx, failed),
        lambda: publish_exports(ctx),
        lambda: delete_bake_dir(ctx, failed.id),
    ]
    if failed.step in ("powering_on", "powered_on"):
        steps.insert(0, lambda: power_pi(ctx, pi, "off"))
    with bake_lock(ctx, failed.id):  # writers into the root wait, then find it failed
        for step in steps:
            best_effort(step, f"rollback of bake {failed.id}")
        forget_bake_lock(ctx, failed.id)
    free_pi(pi, failed, PiState.AVAILABLE, reason[:200])


def delete_bake_dir(ctx: FleetContext, bake_id: str) -> None:
    """Delete the bake's directory (root, boot files, boot image): first moved aside in
    one rename, so that a process still writing under its old path (the HTTP boot
    server making the bake's boot.img) gets "no such file" instead of adding to a tree
    being deleted. A crash between the two leaves a trash tree recovery removes."""
    directory = ctx.bake_dir(bake_id)
    trash = directory.with_name(fsutil.trash_name())
    try:
        os.rename(directory, trash)
    except FileNotFoundError:
        return
    roots.delete_tree(trash)


def free_pi(pi: Pi, bake: Bake, target: PiState, reason: str = "") -> None:
    """Detach the Pi from ``bake`` and move it to ``target`` (available or broken).

    Does nothing to a Pi that has moved on to another bake; a Pi an operator marked
    broken meanwhile is detached but stays broken."""
    with database.atomic():
        released = Pi.update(bake_id=None).where(Pi.id == pi.id, Pi.bake_id == bake.id).execute()
        if not released:
            return
        pi = Pi.get_by_id(pi.id)
        with contextlib.suppress(Conflict):
            if pi.state == PiState.BAKED.value:
                pi = move_pi(pi, PiState.UNBAKING, reason)
            if pi_move_allowed(PiState(pi.state), target) and pi.state != PiState.BROKEN.value:
                broken = reason if target is PiState.BROKEN else ""
                move_pi(pi, target, reason, broken_reason=broken)


def unbake(ctx: FleetContext, bake_id: str) -> Bake:
    """Power off, unexport, delete the root and the bake's own disks, free the Pi."""
    bake = get_live_bake(bake_id)
    if bake.host_id != ctx.settings.host_id:
        raise Conflict(
            f"bake {bake.id} was made by host {bake.host_id!r}, which holds its root and "
            "exports: unbake it through that host's API",
            code="bake_on_other_host",
        )
    if bake.state != BakeState.BAKED.value:
        raise Conflict(f"bake {bake.id} is {bake.state}", code="bake_in_progress")
    with database.atomic():
        try:
            bake = move_bake(bake, BakeState.UNBAKING)
        except Conflict:  # another request is unbaking it: only that one finishes it
            raise Conflict(f"bake {bake.id} is being unbaked", code="bake_in_progress") from None
        pi = Pi.get_by_id(bake.pi_id)
        if pi.state == PiState.BAKED.value and pi.bake_id == bake.id:
            move_pi(pi, PiState.UNBAKING)
    return finish_unbake(ctx, bake)


def finish_unbake(ctx: FleetContext, bake: Bake) -> Bake:
    """The steps of an unbake; the bake is ``unbaked`` only once they have all run (a
    failed step leaves it ``unbaking``, finished by recovery at the next start).

    They run under the bake's lock: a request that writes into the root (agent settings,
    a disk attached) either finished before or finds the bake unbaking."""
    pi = Pi.get_by_id(bake.pi_id)
    power_failure = ""
    with bake_lock(ctx, bake.id):
        try:
            if pi.bake_id == bake.id:  # never switch off the Pi's next bake
                power_pi(ctx, pi, "off")
        except PowerError as exc:
            power_failure = f"power off failed during unbake: {exc.message}"
        release_disks(ctx, bake)
        publish_exports(ctx)  # exports only bootable bakes
        delete_bake_dir(ctx, bake.id)
        unbaked = move_bake(bake, BakeState.UNBAKED, finished_at=utcnow())
        forget_bake_lock(ctx, bake.id)
    # A Pi we could not switch off may still run: keep it out of the fridge.
    target = PiState.BROKEN if power_failure else PiState.AVAILABLE
    free_pi(pi, unbaked, target, power_failure)
    return unbaked


def power_bake(ctx: FleetContext, bake_id: str, action: PowerAction) -> PowerResult:
    """Switch the Pi of a live bake (start it, reboot it with ``cycle``)."""
    bake = get_live_bake(bake_id)
    if bake.state != BakeState.BAKED.value:
        raise Conflict(f"bake {bake.id} is {bake.state}", code="invalid_state")
    return operator_power(ctx, bake.pi.serial, action)


def set_agent_settings(ctx: FleetContext, bake_id: str, agent_settings: dict[str, Any]) -> Bake:
    """Store the settings and write them into the root, for a bake that is not being
    unbaked (Conflict otherwise: its root is going)."""
    with writable_bake(ctx, bake_id) as bake:
        Bake.update(agent_settings=agent_settings).where(Bake.id == bake.id).execute()
        bake = Bake.get_by_id(bake.id)
        write_bake_files(ctx, bake)
    return bake


def agent_settings_for_caller(ip: str, secret: str) -> dict[str, Any]:
    """The agent settings of the live bake on the Pi at ``ip``, for a caller showing the
    bake's own secret (the metadata service): an address alone is a claim anyone on the
    Pi LAN can make, the secret is in the Pi's root only. Any mismatch is not found."""
    caller = caller_bake(ip, secret)
    settings = agent_settings(caller[1]) if caller else None
    if settings is None:
        raise NotFound(f"no agent settings for {ip}", code="agent_settings_not_found")
    return settings


def shown_agent_settings(bake_id: str) -> dict[str, Any]:
    """A live bake's agent settings as an API client may see them: secrets hidden."""
    shown: dict[str, Any] = redacted(agent_settings(get_live_bake(bake_id)) or {})
    return shown


def set_bake_metadata(bake_id: str, metadata: dict[str, Any]) -> Bake:
    bake = get_live_bake(bake_id)
    Bake.update(metadata=metadata).where(Bake.id == bake.id).execute()
    return Bake.get_by_id(bake.id)


def _as_user_error(exc: BaseException) -> BaseException:
    """What a failed bake step means to the user who asked for the bake."""
    if isinstance(exc, PowerError):
        return PowerFailed(f"bake failed: power on: {exc.message}")
    if isinstance(exc, roots.SeasoningError):
        return InvalidInput(f"bake failed: unsafe bakeform root: {exc}", code="unsafe_bakeform")
    if isinstance(exc, roots.RootError | exports.ExportError | OSError):
        return StorageFailed(f"bake failed: could not make the Pi's root: {exc}")
    return exc


# ``...``: mypy cannot infer a lambda with default arguments (``lambda b=bake: ...``, as
# recovery passes them) against ``Callable[[], object]``; steps are called with none.
def best_effort(step: Callable[..., object], what: str) -> bool:
    """Run one cleanup step; a failure is logged, not raised, so the next step runs."""
    try:
        step()
    except Exception:
        log.exception("%s: a step failed; recovery at the next start will retry", what)
        return False
    return True
