"""Disks and their snapshots: sparse images created, attached to one bake (exported to
its Pi and listed in its root), detached, grown and deleted.

A disk is either raw (a block device its user partitions and formats: what BOSH wants)
or formatted by Bakery at creation, optionally with a mount point where the disk agent
mounts it at boot (the container-ready disk: containerd and k3s state on local ext4)."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

from .. import disks, fsutil, identifiers
from ..errors import Conflict, InvalidInput, NotSupported, StorageFailed
from ..models import Bake, Disk, Snapshot, database, shared_database
from ..roots.cloudinit import SEED_DIR
from . import events
from .actors import new_owner
from .bakefiles import WRITABLE_BAKE_STATES, bake_lock, writable_bake, write_bake_files
from .context import FleetContext
from .exports import publish_exports
from .queries import get_disk, get_live_bake, get_snapshot


def create_disk(
    ctx: FleetContext,
    size_mib: int,
    *,
    bake_id: str | None = None,
    ephemeral: bool = False,
    metadata: dict[str, Any] | None = None,
    filesystem: str | None = None,
    mount_point: str | None = None,
    near: str | None = None,
    partitioned: bool = False,
) -> Disk:
    """A new sparse disk, formatted with ``filesystem`` or `partitioned` for BOSH if told,
    attached to ``bake_id`` at once if given. ``near`` names a bake it is meant for (BOSH's
    placement hint): it is made on that bake's host (``fleet.forwarding``), where only that
    bake can use it."""
    if not 1 <= size_mib <= ctx.settings.max_disk_mib:
        raise InvalidInput(f"size_mib must be between 1 and {ctx.settings.max_disk_mib}")
    if filesystem is not None and filesystem not in disks.FILESYSTEMS:
        raise InvalidInput.of_field("filesystem", f"must be one of {', '.join(disks.FILESYSTEMS)}")
    _check_partitioned(partitioned, size_mib, filesystem)
    _check_mount_point(ctx, mount_point, filesystem)
    bake = get_live_bake(bake_id) if bake_id else None
    disk_id = identifiers.new_id()
    try:
        disks.create_disk_image(
            ctx.settings, disk_id, size_mib, filesystem, partitioned=partitioned
        )
    except fsutil.CommandFailed as exc:  # mkfs or sfdisk, with what it said
        raise StorageFailed(str(exc)) from None
    try:
        with writable_bake(ctx, bake.id) if bake else nullcontext(), database.atomic():
            disk = Disk.create(
                id=disk_id,
                size_mib=size_mib,
                bake=bake,
                ephemeral=ephemeral,
                metadata=metadata or {},
                owner=new_owner(),
                filesystem=filesystem,
                mount_point=mount_point,
                host=ctx.settings.host_id,
            )
            if bake:
                _check_mount_point_free(disk, bake)
                write_bake_files(ctx, bake)
    except BaseException:
        disks.delete_disk_image(ctx.settings, disk_id)
        raise
    if bake:
        publish_exports(ctx)
    pi = bake.pi if bake else None
    events.record(pi, "disk", f"disk {disk_id} created", bake_id, size_mib=size_mib)
    return disk


def _check_partitioned(partitioned: bool, size_mib: int, filesystem: str | None) -> None:
    if not partitioned:
        return
    if filesystem is not None:
        raise InvalidInput.of_field(
            "partitioned", "a partitioned disk is formatted by its user: give no filesystem"
        )
    if size_mib > disks.MAX_PARTITIONED_MIB:
        raise InvalidInput.of_field(
            "partitioned", f"an MBR partition spans at most {disks.MAX_PARTITIONED_MIB} MiB"
        )


def delete_disk(ctx: FleetContext, disk_id: str) -> None:
    disk = get_disk(disk_id)
    if disk.bake_id:
        raise Conflict(f"disk {disk.id} is attached to bake {disk.bake_id}; detach it first")
    deleted = Disk.delete().where(Disk.id == disk.id, Disk.bake.is_null()).execute()
    if not deleted:
        raise Conflict(f"disk {disk.id} was attached meanwhile")
    disks.delete_disk_image(ctx.settings, disk.id)


def attach_disk(
    ctx: FleetContext, disk_id: str, bake_id: str, mount_point: str | None = None
) -> Disk:
    """Attach a detached disk to a live bake; ``mount_point`` (a formatted disk's) replaces
    the one the disk had. Attaching it again to the same bake with no new mount point is a
    no-op, so a retried request is safe."""
    disk = get_disk(disk_id)
    bake = get_live_bake(bake_id)
    if disk.bake_id == bake.id and mount_point in (None, disk.mount_point):
        return disk
    if mount_point is not None:
        _check_mount_point(ctx, mount_point, disk.filesystem)
    with writable_bake(ctx, bake.id) as bake, database.atomic():
        if mount_point is not None:
            Disk.update(mount_point=mount_point).where(Disk.id == disk.id).execute()
        attach(Disk.get_by_id(disk.id), bake)
        write_bake_files(ctx, bake)
    publish_exports(ctx)
    return Disk.get_by_id(disk.id)


def attach(disk: Disk, bake: Bake) -> None:
    """Attach a detached disk (or check one attached already); Conflict if another bake
    got it first, if another disk of the bake has its mount point, or if the disk's image
    is on another host than the bake's (its Pi could not mount it)."""
    if shared_database() and disk.host not in (None, bake.host_id):
        raise Conflict(
            f"disk {disk.id} is on host {disk.host!r} and bake {bake.id} on {bake.host_id!r}: "
            "a disk is attached to bakes of its own host",
            code="disk_on_other_host",
        )
    if disk.bake_id != bake.id:
        query = Disk.update(bake=bake.id).where(Disk.id == disk.id, Disk.bake.is_null())
        if not query.execute():
            raise Conflict(f"disk {disk.id} is attached to another bake")
        events.record(bake.pi, "disk", f"disk {disk.id} attached", bake.id)
    _check_mount_point_free(disk, bake)


def _check_mount_point(ctx: FleetContext, mount_point: str | None, filesystem: str | None) -> None:
    """A mount point needs a filesystem Bakery made, and must not hide the files Bakery
    writes into the root: the disks list itself, the agent settings, the bake secret and
    the cloud-init seed, which the Pi reads after the disk agent's first run."""
    if mount_point is None:
        return
    if filesystem is None:
        raise InvalidInput.of_field("mount_point", "a disk needs a filesystem to have one")
    for path in [*ctx.settings.root_file_paths(), SEED_DIR]:
        if f"/{path}".startswith(mount_point + "/"):
            problem = f"it would hide /{path}, which Bakery writes"
            raise InvalidInput.of_field("mount_point", problem)


def _check_mount_point_free(disk: Disk, bake: Bake) -> None:
    """Conflict when another disk of the bake is mounted at the same place."""
    if disk.mount_point is None:
        return
    taken = Disk.select().where(
        Disk.bake == bake.id, Disk.mount_point == disk.mount_point, Disk.id != disk.id
    )
    other = taken.first()
    if other is not None:
        raise Conflict(f"disk {other.id} of bake {bake.id} is mounted at {disk.mount_point}")


def detach_disk(ctx: FleetContext, disk_id: str) -> Disk:
    disk = get_disk(disk_id)
    if not disk.bake_id:
        return disk
    with bake_lock(ctx, disk.bake_id):
        Disk.update(bake=None, ephemeral=False).where(Disk.id == disk.id).execute()
        bake = Bake.get_by_id(disk.bake_id)
        if bake.state in WRITABLE_BAKE_STATES:  # an unbaking bake's root is going
            write_bake_files(ctx, bake)
    publish_exports(ctx)
    events.record(bake.pi, "disk", f"disk {disk.id} detached", bake.id)
    return Disk.get_by_id(disk.id)


def release_disks(ctx: FleetContext, bake: Bake) -> None:
    """Delete the bake's ephemeral disks; detach (keep) the others."""
    for disk in Disk.select().where(Disk.bake == bake.id):
        if disk.ephemeral:
            disk.delete_instance()
            disks.delete_disk_image(ctx.settings, disk.id)
        else:
            Disk.update(bake=None).where(Disk.id == disk.id).execute()


def set_disk_metadata(disk_id: str, metadata: dict[str, Any]) -> Disk:
    disk = get_disk(disk_id)
    Disk.update(metadata=metadata).where(Disk.id == disk.id).execute()
    return Disk.get_by_id(disk.id)


def resize_disk(ctx: FleetContext, disk_id: str, size_mib: int) -> Disk:
    disk = get_disk(disk_id)
    if size_mib < disk.size_mib:
        raise Conflict("disks can grow but not shrink", code="shrink_not_supported")
    if size_mib > ctx.settings.max_disk_mib:
        raise InvalidInput(f"size_mib must be at most {ctx.settings.max_disk_mib}")
    disks.resize_disk_image(ctx.settings, disk.id, size_mib)
    Disk.update(size_mib=size_mib).where(Disk.id == disk.id).execute()
    return Disk.get_by_id(disk.id)


def snapshot_disk(
    ctx: FleetContext, disk_id: str, metadata: dict[str, Any] | None = None
) -> Snapshot:
    """A copy-on-write snapshot of a disk image (reflink filesystems only)."""
    disk = get_disk(disk_id)
    snapshot_id = identifiers.new_id()
    if not disks.snapshot_disk_image(ctx.settings, disk.id, snapshot_id):
        raise NotSupported("snapshots need a data dir on a filesystem with reflinks (btrfs or xfs)")
    try:
        return Snapshot.create(
            id=snapshot_id,
            disk_id=disk.id,
            size_mib=disk.size_mib,
            metadata=metadata or {},
            owner=disk.owner,
            host=ctx.settings.host_id,
        )
    except BaseException:
        disks.delete_snapshot_image(ctx.settings, snapshot_id)
        raise


def delete_snapshot(ctx: FleetContext, snapshot_id: str) -> None:
    snapshot = get_snapshot(snapshot_id)
    snapshot.delete_instance()
    disks.delete_snapshot_image(ctx.settings, snapshot.id)
