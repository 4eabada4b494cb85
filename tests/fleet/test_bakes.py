"""fleet.bakes: a bake's steps, its rollback when one fails, and unbakes that always end."""

from __future__ import annotations

import fcntl
import os

import pytest

from bakery import exports, roots
from bakery.errors import Conflict, StorageFailed
from bakery.models import Bake, Pi, PiState
from tests.conftest import install_ppi

S = PiState


@pytest.mark.parametrize("clone", ["clone_root", "clone_boot"])
def test_a_clone_failure_rolls_the_bake_back(fleet, raspios, monkeypatch, clone):
    fleet.register_pi("00000001", ip="127.0.0.11")

    def broken_clone(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(roots, clone, broken_clone)
    with pytest.raises(StorageFailed, match="No space left"):
        fleet.bake("raspios")
    assert Pi.get(Pi.serial == "00000001").state == "available"
    assert Bake.get().state == "failed" and "No space" in Bake.get().error
    assert list(fleet.settings.path("bakes").iterdir()) == []


def test_no_bakeform_is_swapped_while_a_bake_clones_it(fleet, bake_pi, monkeypatch):
    """Root and boot files of a bake come from one import, even under ``--replace``."""
    clone_root = roots.clone_root
    swap_possible = []

    def clone_and_try_a_swap(*args, **kwargs):
        lock = fleet.settings.path("locks", "bakeforms.lock")
        with open(lock, "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what a swap takes
                swap_possible.append(True)
            except BlockingIOError:
                swap_possible.append(False)
        return clone_root(*args, **kwargs)

    monkeypatch.setattr(roots, "clone_root", clone_and_try_a_swap)
    bake_pi()
    assert swap_possible == [False]


def test_a_bake_boots_its_own_links_to_its_bakeform_boot_files(fleet, bake_pi):
    bake = bake_pi()
    bakeform_kernel = fleet.bakeform_dir("raspios") / "boot" / "kernel8.img"
    bake_kernel = fleet.bake_boot(bake.id) / "kernel8.img"
    assert os.path.samefile(bakeform_kernel, bake_kernel)  # a link: no space, one TFTP cache
    assert fleet.boot_target("00000001", "127.0.0.11").boot_dir == fleet.bake_boot(bake.id)
    fleet.unbake(bake.id)
    assert bakeform_kernel.is_file() and not fleet.bake_dir(bake.id).exists()


def test_an_unbake_that_fails_half_way_is_finished_at_the_next_start(fleet, bake_pi, monkeypatch):
    bake = bake_pi()

    def exports_down(*_args):
        raise exports.ExportError("exportfs -ra failed")

    monkeypatch.setattr(exports, "publish", exports_down)
    with pytest.raises(exports.ExportError):
        fleet.unbake(bake.id)
    assert Bake.get_by_id(bake.id).state == "unbaking"  # not claimed done
    with pytest.raises(Conflict):
        fleet.unbake(bake.id)  # a retry does not run the steps twice
    monkeypatch.undo()
    assert fleet.recover()["unbaked"] == 1
    assert Bake.get_by_id(bake.id).state == "unbaked"
    pi = Pi.get(Pi.serial == "00000001")
    assert (pi.state, pi.bake_id) == ("available", None)
    assert not fleet.bake_dir(bake.id).exists()


def test_a_pi_marked_broken_while_baked_can_be_unbaked_and_repaired(fleet, bake_pi):
    bake = bake_pi()
    fleet.set_pi_state("00000001", S.BROKEN, "smoke")
    fleet.unbake(bake.id)
    pi = Pi.get(Pi.serial == "00000001")
    assert (pi.state, pi.bake_id) == ("broken", None)
    assert fleet.set_pi_state("00000001", S.AVAILABLE).state == "available"


def test_a_power_off_failure_during_unbake_leaves_the_pi_broken_and_repairable(
    fleet, bake_pi, ppi_dir
):
    ppi = install_ppi(
        ppi_dir,
        "ppi.py",
        "import json, sys\nr = json.load(sys.stdin)\n"
        "print('ok' if r['op'] == 'on' else json.dumps({'ok': False, 'error': "
        "{'type': 'fatal', 'message': 'relay stuck'}}))\n",
    )
    bake = bake_pi(power_driver="ppi", power_settings={"program": ppi})
    fleet.unbake(bake.id)
    pi = Pi.get(Pi.serial == "00000001")
    assert (pi.state, pi.bake_id) == ("broken", None) and "relay stuck" in pi.broken_reason
    assert fleet.set_pi_state("00000001", S.AVAILABLE).state == "available"
