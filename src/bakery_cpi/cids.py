"""What the director's ids may be before any of them goes into a request path: Bakery's
object ids for VMs, disks and snapshots (32 lowercase hex), bakeform names for stemcells."""

from __future__ import annotations

import hashlib
import secrets
import string
from typing import Any, TypeGuard

from .errors import CpiError, DiskNotFound, VMNotFound

NAME_CHARS = set(string.ascii_letters + string.digits + "._-")
HEX = set("0123456789abcdef")


def is_object_id(value: Any) -> TypeGuard[str]:
    """Bakery's ids (bakes, disks, snapshots) are 32 lowercase hex; nothing else is
    put into a request path."""
    return isinstance(value, str) and len(value) == 32 and set(value) <= HEX


def checked_vm_cid(vm_cid: Any) -> str:
    """``vm_cid`` if it can name a bake, else the director's VMNotFound."""
    if not is_object_id(vm_cid):
        raise VMNotFound(f"VM '{vm_cid}' not found")
    return vm_cid


def checked_disk_cid(disk_cid: Any) -> str:
    """``disk_cid`` if it can name a disk, else the director's DiskNotFound."""
    if not is_object_id(disk_cid):
        raise DiskNotFound(f"Disk '{disk_cid}' not found")
    return disk_cid


def stemcell_name(cloud_properties: dict[str, Any]) -> str:
    """A bakeform name (``[A-Za-z0-9][A-Za-z0-9._-]{0,63}``) from the stemcell's name and
    version, so re-uploading one stemcell replaces its bakeform instead of adding one."""
    wanted = "-".join(
        str(cloud_properties[key])
        for key in ("name", "version")
        if cloud_properties.get(key) not in (None, "")
    )
    name = "".join(c if c in NAME_CHARS else "-" for c in wanted)
    while ".." in name:
        name = name.replace("..", ".")
    name = name.lstrip("._-")
    if not name:
        return f"stemcell-{secrets.token_hex(8)}"
    if len(name) > 64:
        return f"{name[:55]}-{hashlib.sha1(wanted.encode()).hexdigest()[:8]}"
    return name


def require_stemcell_cid(stemcell_cid: Any) -> None:
    valid = (
        isinstance(stemcell_cid, str)
        and 0 < len(stemcell_cid) <= 64
        and stemcell_cid[0].isalnum()
        and set(stemcell_cid) <= NAME_CHARS
        and ".." not in stemcell_cid
    )
    if not valid:
        raise CpiError(f"stemcell '{stemcell_cid}' is not a valid stemcell cid")
