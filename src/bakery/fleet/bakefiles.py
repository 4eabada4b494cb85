"""What a Pi reads from its own root: the agent settings (the BOSH agent's File settings
source) and the list of attached disks (the disk agent)."""

from __future__ import annotations

import json

from .. import disks, roots
from ..models import Bake, Disk
from .context import FleetContext


def write_bake_files(ctx: FleetContext, bake: Bake) -> None:
    """Write both files into the bake's root, symlink-safely: the root came from an
    uploaded image."""
    root = ctx.bake_root(bake.id)
    settings = ctx.settings
    if bake.agent_settings is not None:
        text = json.dumps(bake.agent_settings, indent=2, sort_keys=True) + "\n"
        roots.write_in_root(root, settings.agent_settings_path, text.encode(), mode=0o600)
    lines = [
        f"{disk.id} {settings.nfs_server}:{disks.disk_dir(settings, disk.id)}\n"
        for disk in Disk.select().where(Disk.bake == bake.id).order_by(Disk.created_at)
    ]
    roots.write_in_root(root, settings.disks_list_path, "".join(lines).encode())
