"""fleet.disks: disks attached to a bake reach what its Pi reads."""

from __future__ import annotations


def test_a_disk_created_on_a_bake_is_in_its_disks_list(fleet, bake_pi):
    bake = bake_pi()
    disk = fleet.create_disk(4, bake_id=bake.id)
    listing = fleet.bake_root(bake.id) / fleet.settings.disks_list_path
    assert listing.read_text().split()[0] == disk.id
