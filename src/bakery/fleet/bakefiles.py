"""What a Pi reads from its own root: the agent settings (the BOSH agent's File settings
source), the list of attached disks (the disk agent) and the bake's own secret."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from .. import disks, identifiers, roots, stemcell
from ..config import Settings
from ..errors import Conflict
from ..models import Bake, BakeState, Disk, Pi
from .context import FleetContext
from .queries import get_live_bake
from .states import LIVE_BAKE_STATES

#: Bakes whose roots Bakery still writes into: being made, or baked.
WRITABLE_BAKE_STATES = (BakeState.PREPARING.value, BakeState.BAKED.value)


def bake_lock(ctx: FleetContext, bake_id: str) -> AbstractContextManager[None]:
    """Held by an unbake while it deletes the bake's root, and by whoever writes into
    the root meanwhile, so no file is made in a tree being deleted."""
    return ctx.lock(_bake_lock_name(bake_id))


def forget_bake_lock(ctx: FleetContext, bake_id: str) -> None:
    """Called by the unbake, holding the lock, once the bake is unbaked for good."""
    ctx.forget_lock(_bake_lock_name(bake_id))


def _bake_lock_name(bake_id: str) -> str:
    return f"bake-{bake_id}"


@contextmanager
def writable_bake(ctx: FleetContext, bake_id: str) -> Iterator[Bake]:
    """Hold the bake's lock and yield the live bake as it is now; Conflict
    (bake_in_progress) while it is being unbaked, as get_live_bake once it is gone."""
    with bake_lock(ctx, bake_id):
        bake = get_live_bake(bake_id)
        if bake.state not in WRITABLE_BAKE_STATES:
            raise Conflict(f"bake {bake.id} is being unbaked", code="bake_in_progress")
        yield bake


def write_bake_files(ctx: FleetContext, bake: Bake) -> None:
    """Write the agent settings and the disks list into the bake's root, symlink-safely:
    the root came from an uploaded image. Callers of a baked bake hold
    ``writable_bake``."""
    root = ctx.bake_root(bake.id)
    settings = ctx.settings
    attached = list(Disk.select().where(Disk.bake == bake.id).order_by(Disk.created_at))
    agent = agent_settings(bake, attached)
    if agent is not None:
        text = json.dumps(agent, indent=2, sort_keys=True) + "\n"
        roots.write_in_root(root, settings.agent_settings_path, text.encode(), mode=0o600)
    roots.write_in_root(root, settings.disks_list_path, disks_list(settings, attached).encode())


def disks_list(settings: Settings, attached: list[Disk]) -> str:
    """The disk agent's list: ``<disk-id> <server>:<export-dir>``, then ``<filesystem>
    <mount-point>`` for a disk it mounts. Mounted disks come last, sorted by mount point,
    so that a disk mounted inside another's mount point is mounted after it."""
    lines = []
    for disk in sorted(attached, key=lambda disk: disk.mount_point or ""):
        line = f"{disk.id} {settings.nfs_server}:{disks.disk_dir(settings, disk.id)}"
        if disk.mount_point:
            line += f" {disk.filesystem} {disk.mount_point}"
        lines.append(line + "\n")
    return "".join(lines)


def agent_settings(bake: Bake, attached: list[Disk] | None = None) -> dict[str, Any] | None:
    """The bake's agent settings as its Pi gets them: what was stored, with the persistent
    disks that are attached now (BOSH settings, which have ``disks``, only). Bakery keeps
    this list itself, so the CPI never reads the settings (and their secrets) back."""
    stored: dict[str, Any] | None = bake.agent_settings
    if stored is None or not isinstance(stored.get("disks"), dict):
        return stored
    if attached is None:
        attached = list(Disk.select().where(Disk.bake == bake.id).order_by(Disk.created_at))
    persistent = {
        disk.id: {"id": disk.id, "path": stemcell.disk_device(disk.id)}
        for disk in attached
        if not disk.ephemeral
    }
    return {**stored, "disks": {**stored["disks"], "persistent": persistent}}


def give_secret(ctx: FleetContext, bake: Bake) -> None:
    """A new secret for the bake, written into its root (readable by root only) and kept
    as a hash: the Pi shows it to ask Bakery about itself."""
    secret = secrets.token_urlsafe(32)
    roots.write_in_root(
        ctx.bake_root(bake.id), ctx.settings.bake_secret_path, secret.encode(), mode=0o600
    )
    Bake.update(secret_hash=secret_hash(secret)).where(Bake.id == bake.id).execute()


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(bake: Bake, presented: str) -> bool:
    return bool(bake.secret_hash) and hmac.compare_digest(bake.secret_hash, secret_hash(presented))


def caller_bake(ip: str, secret: str) -> tuple[Pi, Bake] | None:
    """The Pi at ``ip`` and its live bake, for a caller showing that bake's secret (the
    metadata service): an address alone is a claim anyone on the Pi LAN can make, the
    secret is in the Pi's root only. None for any mismatch."""
    try:
        pi = Pi.get_or_none(Pi.last_ip == identifiers.ip(ip))
    except identifiers.InvalidIdentifier:
        return None
    bake = Bake.get_or_none(Bake.id == pi.bake_id) if pi and pi.bake_id else None
    if pi is None or bake is None or bake.state not in LIVE_BAKE_STATES:
        return None
    return (pi, bake) if secret_matches(bake, secret) else None
