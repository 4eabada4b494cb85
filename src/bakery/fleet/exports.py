"""What the NFS server exports, derived from the database every time: each bootable bake's
root and its disks, to the one address its Pi boots from."""

from __future__ import annotations

from typing import cast

from .. import disks, exports
from ..models import Bake, Disk, Pi
from .context import FleetContext
from .states import BOOTABLE_BAKE_STATES


def desired_exports(ctx: FleetContext) -> list[exports.Export]:
    """Exports for this host's bakes whose Pi may boot. A Pi whose address is not yet
    known gets nothing (never a wildcard). Two queries, however many bakes and disks."""
    bootable = (
        (Bake.state.in_(BOOTABLE_BAKE_STATES))
        & (Pi.last_ip.is_null(False))
        & (Bake.host_id == ctx.settings.host_id)
    )
    result = [
        # ``bootable`` selects only Pis with an address
        exports.Export(ctx.bake_root(bake.id), cast(str, bake.pi.last_ip), "root", bake.id)
        for bake in Bake.select(Bake, Pi).join(Pi).where(bootable)
    ]
    attached = Disk.select(Disk, Bake, Pi).join(Bake).join(Pi).where(bootable)
    result += [
        # the inner joins give every disk a bake, and ``bootable`` its Pi an address
        exports.Export(
            disks.disk_dir(ctx.settings, disk.id),
            cast(str, cast(Bake, disk.bake).pi.last_ip),
            "disk",
            disk.id,
        )
        for disk in attached
    ]
    return result


def publish_exports(ctx: FleetContext) -> None:
    """Rewrite the exports from the database. The list is read under the same lock as it
    is written, so a slower writer never replaces a newer list with an older one."""
    with ctx.lock("exports-plan"):
        exports.publish(ctx.settings, desired_exports(ctx))
