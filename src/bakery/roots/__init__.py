"""Per-bake root trees: cheap clones of a bakeform's root, seasoned with their own identity.

The original bakery copied a whole root (``rsync -xa``) for every bake. Here a bake costs
what the filesystem under the data directory allows: a btrfs snapshot (constant time), an
xfs/btrfs reflink copy (metadata only) or, elsewhere, a plain but faithful copy.

A root comes from an uploaded image, so its contents are hostile: every write made while
seasoning walks the tree one component at a time with ``O_NOFOLLOW`` (see `write_in_root`)
so that a symlink planted in the image can never redirect a write onto the host.

The modules: ``clone`` (snapshot, reflink, copy; delete), ``copier`` (the parallel copy),
``confined`` (symlink-safe IO inside a root), ``seasoning`` (a root's own identity),
``cloudinit`` (a bake's cloud-init seed).
"""

from __future__ import annotations

from .clone import (
    CLONE_METHODS,
    CloneMethod,
    clone_boot,
    clone_method_for,
    clone_root,
    create_base,
    delete_tree,
)
from .cloudinit import check_user_data, seed_cloud_init
from .confined import open_in_root, read_in_root, symlink_in_root, write_in_root
from .errors import RootError, SeasoningError
from .seasoning import fstab_without_sd_card, hosts_with_hostname, season_root

__all__ = [
    "CLONE_METHODS",
    "CloneMethod",
    "RootError",
    "SeasoningError",
    "check_user_data",
    "clone_boot",
    "clone_method_for",
    "clone_root",
    "create_base",
    "delete_tree",
    "fstab_without_sd_card",
    "hosts_with_hostname",
    "open_in_root",
    "read_in_root",
    "season_root",
    "seed_cloud_init",
    "symlink_in_root",
    "write_in_root",
]
