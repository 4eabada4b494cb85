"""fleet.recovery: what a crash left is finished, undone or removed at the next start, and
another host's bakes are left alone."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from bakery.models import Bake, Bakeform, Disk, Pi


def test_recover_removes_files_no_row_owns(fleet, raspios):
    strays = [
        fleet.settings.path("bakes", "0" * 32, "root"),
        fleet.settings.path("bakeforms", ".incoming-1234", "root"),
        fleet.settings.path("bakeforms", ".trash-1234"),
        fleet.settings.path("disks", ".incoming-" + "1" * 32),
        fleet.settings.path("disks", "2" * 32),
    ]
    for path in strays:
        path.mkdir(parents=True)
    kept_disk = fleet.create_disk(4)
    counts = fleet.recover()
    assert counts["stray_paths"] == 5
    assert not any(p.exists() for p in strays)
    assert Bakeform.get().name == "raspios"
    assert fleet.settings.path("bakeforms", "raspios", "root", "etc").is_dir()
    assert Disk.get_by_id(kept_disk.id)
    assert fleet.settings.path("disks", kept_disk.id, "disk.img").is_file()


def test_recover_finishes_an_interrupted_unbake(fleet, bake_pi):
    bake = bake_pi()
    Bake.update(state="unbaking").where(Bake.id == bake.id).execute()
    Pi.update(state="unbaking").execute()
    assert fleet.recover()["unbaked"] == 1
    assert Bake.get_by_id(bake.id).state == "unbaked"
    assert Pi.get().state == "available" and Pi.get().bake_id is None
    assert not fleet.bake_dir(bake.id).exists()


def test_recover_leaves_another_hosts_bakes_alone(fleet, bake_pi):
    bake = bake_pi()
    Bake.update(state="preparing", host_id="other-host").where(Bake.id == bake.id).execute()
    Pi.update(state="preparing").execute()
    assert fleet.recover()["rolled_back"] == 0
    assert Bake.get_by_id(bake.id).state == "preparing"


def test_recover_gives_a_bake_made_without_boot_files_its_own(fleet, bake_pi):
    bake = bake_pi()
    shutil.rmtree(fleet.bake_boot(bake.id))
    fleet.recover()
    assert (fleet.bake_boot(bake.id) / "kernel8.img").is_file()
    assert fleet.boot_target("00000001", "127.0.0.11").bake_id == bake.id


def test_recover_frees_a_pi_whose_bake_is_gone(fleet, bake_pi):
    bake = bake_pi()
    Bake.update(state="failed").where(Bake.id == bake.id).execute()  # a half-finished run
    fleet.recover()
    pi = Pi.get(Pi.serial == "00000001")
    assert (pi.state, pi.bake_id) == ("available", None)


@pytest.mark.root
@pytest.mark.tools("chattr")
def test_recover_carries_on_past_what_it_cannot_remove(fleet, bake_pi):
    bake = bake_pi()
    Bake.update(state="unbaking").where(Bake.id == bake.id).execute()
    Pi.update(state="unbaking").execute()
    stuck = fleet.settings.path("bakeforms", ".incoming-stuck")
    stuck.mkdir(parents=True)
    (stuck / "immutable").write_text("x")
    subprocess.run(["chattr", "+i", str(stuck / "immutable")], check=True)
    other = fleet.settings.path("disks", ".incoming-" + "1" * 32)
    other.mkdir(parents=True)
    try:
        counts = fleet.recover()
    finally:
        subprocess.run(["chattr", "-i", str(stuck / "immutable")], check=True)

    assert counts["failed"] == 1 and counts["unbaked"] == 1
    assert stuck.exists() and not other.exists()  # the next start retries the stuck one
    assert Bake.get_by_id(bake.id).state == "unbaked"
    assert fleet.recover()["failed"] == 0 and not stuck.exists()
