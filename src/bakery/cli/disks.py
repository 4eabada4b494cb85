"""``bakery disk``: create, list, show, attach, detach, resize and delete disks."""

from __future__ import annotations

import click

from .output import Context, api_command, emit, resource_commands, without_none


@click.group()
def disk() -> None:
    """Sparse disks for bakes."""


DISK_COLUMNS = ("id", "size_mib", "bake_id", "filesystem", "mount_point", "created_at")

MOUNT_POINT_OPTION = click.option(
    "--mount-point",
    help="Where the Pi mounts the disk at boot, before containerd/k3s (needs --filesystem).",
)


@api_command(disk, "create")
@click.argument("size_mib", type=click.IntRange(min=1))
@click.option("--bake", "bake_id", help="Attach to this bake at once.")
@click.option("--filesystem", help="Format it (ext4) now; without, the disk is left raw.")
@MOUNT_POINT_OPTION
@click.option(
    "--partitioned",
    is_flag=True,
    help="Give it one Linux partition, unformatted: a persistent disk for the BOSH agent.",
)
def disk_create(
    ctx: Context,
    size_mib: int,
    bake_id: str | None,
    filesystem: str | None,
    mount_point: str | None,
    partitioned: bool,
) -> None:
    """Create a disk of SIZE_MIB MiB."""
    body = {
        "size_mib": size_mib,
        "bake_id": bake_id,
        "filesystem": filesystem,
        "mount_point": mount_point,
        "partitioned": partitioned or None,
    }
    emit(ctx, ctx.api.post("/disks", without_none(body)))


resource_commands(disk, "/disks", "disk_id", DISK_COLUMNS)


@api_command(disk, "attach")
@click.argument("disk_id")
@click.argument("bake_id")
@MOUNT_POINT_OPTION
def disk_attach(ctx: Context, disk_id: str, bake_id: str, mount_point: str | None) -> None:
    """Attach DISK_ID to BAKE_ID."""
    body = without_none({"bake_id": bake_id, "mount_point": mount_point})
    emit(ctx, ctx.api.post(f"/disks/{disk_id}/attach", body))


@api_command(disk, "detach")
@click.argument("disk_id")
def disk_detach(ctx: Context, disk_id: str) -> None:
    emit(ctx, ctx.api.post(f"/disks/{disk_id}/detach"))


@api_command(disk, "resize")
@click.argument("disk_id")
@click.argument("size_mib", type=click.IntRange(min=1))
def disk_resize(ctx: Context, disk_id: str, size_mib: int) -> None:
    """Grow a disk to SIZE_MIB MiB."""
    emit(ctx, ctx.api.post(f"/disks/{disk_id}/resize", {"size_mib": size_mib}))
