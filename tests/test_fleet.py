"""The fleet's rules: the Pi state table, conditional transitions, rollback, recovery."""

from __future__ import annotations

import fcntl
import os
import shutil

import pytest

from bakery import exports, roots
from bakery.errors import Conflict, StorageFailed
from bakery.fleet import netboot
from bakery.fleet.states import PI_TRANSITIONS as TRANSITIONS
from bakery.fleet.states import move_pi
from bakery.fleet.states import pi_move_allowed as allowed
from bakery.models import Bake, Bakeform, Disk, Event, Pi, PiState

S = PiState


def test_the_state_table_is_the_architecture_lifecycle():
    lifecycle = [S.AVAILABLE, S.PREPARING, S.BAKED, S.UNBAKING, S.AVAILABLE]
    for current, target in zip(lifecycle, lifecycle[1:], strict=False):
        assert allowed(current, target)
    assert allowed(S.DISCOVERED, S.AVAILABLE)
    assert allowed(S.PREPARING, S.AVAILABLE)  # rollback
    assert all(allowed(state, S.BROKEN) for state in PiState if state is not S.BROKEN)
    assert allowed(S.BROKEN, S.AVAILABLE)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (S.AVAILABLE, S.BAKED),
        (S.BAKED, S.AVAILABLE),
        (S.DISCOVERED, S.PREPARING),
        (S.UNBAKING, S.BAKED),
        (S.BROKEN, S.PREPARING),
        (S.BROKEN, S.BROKEN),
    ],
)
def test_shortcuts_are_not_allowed(current, target):
    assert not allowed(current, target)
    assert (current, target) not in TRANSITIONS


def test_a_transition_applies_only_if_the_pi_is_still_where_we_saw_it(fleet):
    pi = fleet.register_pi("00000001")
    stale = Pi.get_by_id(pi.id)
    move_pi(pi, S.BROKEN, "operator")
    with pytest.raises(Conflict):
        move_pi(stale, S.PREPARING)
    assert Pi.get_by_id(pi.id).state == "broken"


@pytest.mark.parametrize("clone", ["clone_root", "clone_boot"])
def test_a_clone_failure_rolls_the_bake_back(fleet, sd_image_file, monkeypatch, clone):
    with open(sd_image_file, "rb") as image:
        fleet.import_bakeform("raspios", image)
    fleet.register_pi("00000001", ip="127.0.0.11")

    def broken_clone(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(roots, clone, broken_clone)
    with pytest.raises(StorageFailed, match="No space left"):
        fleet.bake("raspios")
    assert Pi.get(Pi.serial == "00000001").state == "available"
    assert Bake.get().state == "failed" and "No space" in Bake.get().error
    assert list(fleet.settings.path("bakes").iterdir()) == []


def test_recover_removes_files_no_row_owns(fleet, sd_image_file):
    with open(sd_image_file, "rb") as image:
        fleet.import_bakeform("raspios", image)
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


def test_recover_finishes_an_interrupted_unbake(fleet, sd_image_file):
    with open(sd_image_file, "rb") as image:
        fleet.import_bakeform("raspios", image)
    fleet.register_pi("00000001", ip="127.0.0.11")
    bake = fleet.bake("raspios")
    Bake.update(state="unbaking").where(Bake.id == bake.id).execute()
    Pi.update(state="unbaking").execute()
    assert fleet.recover()["unbaked"] == 1
    assert Bake.get_by_id(bake.id).state == "unbaked"
    assert Pi.get().state == "available" and Pi.get().bake_id is None
    assert not fleet.bake_dir(bake.id).exists()


def test_recover_leaves_another_hosts_bakes_alone(fleet, sd_image_file):
    with open(sd_image_file, "rb") as image:
        fleet.import_bakeform("raspios", image)
    fleet.register_pi("00000001", ip="127.0.0.11")
    bake = fleet.bake("raspios")
    Bake.update(state="preparing", host_id="other-host").where(Bake.id == bake.id).execute()
    Pi.update(state="preparing").execute()
    assert fleet.recover()["rolled_back"] == 0
    assert Bake.get_by_id(bake.id).state == "preparing"


STATEFUL_PPI = """\
import json, pathlib, sys
request = json.load(sys.stdin)
state_file = pathlib.Path(sys.argv[1])
if request["op"] in ("on", "off"):
    state_file.write_text(request["op"])
state = state_file.read_text() if state_file.exists() else "off"
print(json.dumps({"ok": True, "state": state}))
"""


def test_restore_power_brings_pis_back_to_what_their_state_implies(fleet, sd_image_file, tmp_path):
    import sys

    ppi = tmp_path / "relay.py"
    ppi.write_text(STATEFUL_PPI)
    with open(sd_image_file, "rb") as image:
        fleet.import_bakeform("raspios", image)
    relays = {}
    for serial in ("00000001", "00000002"):
        relays[serial] = tmp_path / f"relay-{serial}"
        fleet.register_pi(
            serial,
            ip=f"127.0.0.{int(serial)}",
            power_driver="ppi",
            power_settings={"path": sys.executable, "args": [str(ppi), str(relays[serial])]},
        )
    bake = fleet.bake("raspios", serial="00000001")
    assert relays["00000001"].read_text() == "on"
    relays["00000001"].write_text("off")  # the rack lost power while bakery was down
    relays["00000002"].write_text("on")  # and a free Pi came up on its own
    fleet.restore_power()
    assert relays["00000001"].read_text() == "on"
    assert relays["00000002"].read_text() == "off"
    assert Pi.get(Pi.serial == "00000001").power_state == "on"
    assert Bake.get_by_id(bake.id).state == "baked"


def test_an_unknown_pi_booting_is_recorded_as_discovered(fleet):
    assert fleet.boot_target("CAFEBABE", "127.0.0.33", "4B") is None
    pi = Pi.get(Pi.serial == "cafebabe")
    assert (pi.state, pi.last_ip, pi.model) == ("discovered", "127.0.0.33", "4B")
    assert fleet.boot_target("cafebabe", "127.0.0.33") is None  # not yet accepted
    fleet.set_pi_state("cafebabe", S.AVAILABLE)
    assert Pi.get(Pi.serial == "cafebabe").state == "available"


def test_discovered_pis_stop_being_recorded_past_the_cap(fleet, monkeypatch):
    monkeypatch.setattr(netboot, "MAX_DISCOVERED", 2)
    for serial in ("00000001", "00000002", "00000003"):  # the third: a made-up serial
        assert fleet.boot_target(serial, "127.0.0.11") is None
    assert [pi.serial for pi in Pi.select().order_by(Pi.serial)] == ["00000001", "00000002"]
    fleet.set_pi_state("00000001", S.AVAILABLE, "accepted")
    fleet.boot_target("00000003", "127.0.0.13")
    assert Pi.get(Pi.serial == "00000003").state == "discovered"


def test_auto_accept_makes_new_pis_available(fleet, monkeypatch):
    import dataclasses

    monkeypatch.setattr(
        fleet.context, "settings", dataclasses.replace(fleet.settings, auto_accept=True)
    )
    fleet.boot_target("0000beef", "127.0.0.34")
    assert Pi.get(Pi.serial == "0000beef").state == "available"


def test_booting_a_baked_pi_pins_its_address_and_exports(fleet, sd_image_file):
    with open(sd_image_file, "rb") as image:
        fleet.import_bakeform("raspios", image)
    fleet.register_pi("00000001", ip="127.0.0.11")
    fleet.register_pi("00000002", ip="127.0.0.12")
    bake = fleet.bake("raspios", serial="00000001")
    target = fleet.boot_target("1", "127.0.0.12")  # DHCP gave it the other Pi's old address
    assert target.bake_id == bake.id
    assert (
        f"nfsroot={fleet.settings.nfs_server}:{fleet.bake_root(bake.id)},vers=3" in target.cmdline
    )
    assert (target.boot_dir / "start4.elf").is_file()
    assert Pi.get(Pi.serial == "00000001").last_ip == "127.0.0.12"
    assert Pi.get(Pi.serial == "00000002").last_ip is None
    exports = open(fleet.settings.exports_file).read()
    assert "Clients = 127.0.0.12;" in exports and "127.0.0.11" not in exports


def test_a_pi_with_a_registered_mac_does_not_move_to_an_address_no_neighbour_confirms(
    fleet, sd_image_file
):
    with open(sd_image_file, "rb") as image:
        fleet.import_bakeform("raspios", image)
    fleet.register_pi("00000001", ip="127.0.0.11", mac="dc:a6:32:00:00:01")
    fleet.bake("raspios")
    exports_before = open(fleet.settings.exports_file).read()
    assert fleet.boot_target("00000001", "192.0.2.57") is None  # TEST-NET: no neighbour
    assert Pi.get().last_ip == "127.0.0.11"
    assert open(fleet.settings.exports_file).read() == exports_before
    refusal = Pi.get().events.order_by(Event.id.desc()).first()
    assert refusal.message == (
        "address 192.0.2.57 not taken: it has no known MAC yet, the Pi has dc:a6:32:00:00:01"
    )


def test_refusals_reach_the_timeline_once_a_minute_whatever_the_addresses(fleet):
    fleet.register_pi("00000001", ip="127.0.0.11", mac="dc:a6:32:00:00:01")
    for address in ("192.0.2.57", "192.0.2.58", "192.0.2.59"):  # TEST-NET: no neighbours
        assert fleet.boot_target("00000001", address) is None
    refusals = [e for e in Pi.get().events if " not taken: " in e.message]
    assert len(refusals) == 1 and Pi.get().last_ip == "127.0.0.11"


def test_a_made_up_serial_from_a_baked_pis_address_leaves_it_its_exports(fleet, sd_image_file):
    bake = _baked(fleet, sd_image_file)
    assert fleet.boot_target("0badc0de", "127.0.0.11") is None  # same address, unknown serial
    assert Pi.get(Pi.serial == "00000001").last_ip == "127.0.0.11"
    assert Pi.get(Pi.serial == "0badc0de").last_ip is None
    assert f'Path = "{fleet.bake_root(bake.id)}";' in open(fleet.settings.exports_file).read()


def test_no_bakeform_is_swapped_while_a_bake_clones_it(fleet, sd_image_file, monkeypatch):
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
    _baked(fleet, sd_image_file)
    assert swap_possible == [False]


def test_pis_without_a_live_bake_get_nothing_to_boot(fleet):
    fleet.register_pi("00000001", ip="127.0.0.11")
    assert fleet.boot_target("00000001", "127.0.0.11") is None
    fleet.turn_away("00000001")
    assert any("powering off" in e.message for e in Pi.get().events)
    fleet.set_pi_state("00000001", S.BROKEN, "smoke")
    assert fleet.boot_target("00000001", "127.0.0.11") is None


def _baked(fleet, sd_image_file, **pi):
    with open(sd_image_file, "rb") as image:
        fleet.import_bakeform("raspios", image)
    fleet.register_pi("00000001", ip="127.0.0.11", **pi)
    return fleet.bake("raspios")


def test_a_bake_boots_its_own_links_to_its_bakeform_boot_files(fleet, sd_image_file):
    bake = _baked(fleet, sd_image_file)
    bakeform_kernel = fleet.bakeform_dir("raspios") / "boot" / "kernel8.img"
    bake_kernel = fleet.bake_boot(bake.id) / "kernel8.img"
    assert os.path.samefile(bakeform_kernel, bake_kernel)  # a link: no space, one TFTP cache
    assert fleet.boot_target("00000001", "127.0.0.11").boot_dir == fleet.bake_boot(bake.id)
    fleet.unbake(bake.id)
    assert bakeform_kernel.is_file() and not fleet.bake_dir(bake.id).exists()


def test_recover_gives_a_bake_made_without_boot_files_its_own(fleet, sd_image_file):
    bake = _baked(fleet, sd_image_file)
    shutil.rmtree(fleet.bake_boot(bake.id))
    fleet.recover()
    assert (fleet.bake_boot(bake.id) / "kernel8.img").is_file()
    assert fleet.boot_target("00000001", "127.0.0.11").bake_id == bake.id


def test_an_unbake_that_fails_half_way_is_finished_at_the_next_start(
    fleet, sd_image_file, monkeypatch
):
    bake = _baked(fleet, sd_image_file)

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


def test_a_pi_marked_broken_while_baked_can_be_unbaked_and_repaired(fleet, sd_image_file):
    bake = _baked(fleet, sd_image_file)
    fleet.set_pi_state("00000001", S.BROKEN, "smoke")
    fleet.unbake(bake.id)
    pi = Pi.get(Pi.serial == "00000001")
    assert (pi.state, pi.bake_id) == ("broken", None)
    assert fleet.set_pi_state("00000001", S.AVAILABLE).state == "available"


def test_a_power_off_failure_during_unbake_leaves_the_pi_broken_and_repairable(
    fleet, sd_image_file, tmp_path
):
    import sys

    ppi = tmp_path / "ppi.py"
    ppi.write_text(
        "import json, sys\nr = json.load(sys.stdin)\n"
        "print('ok' if r['op'] == 'on' else json.dumps({'ok': False, 'error': "
        "{'type': 'fatal', 'message': 'relay stuck'}}))\n"
    )
    bake = _baked(
        fleet, sd_image_file, power_driver="ppi",
        power_settings={"path": sys.executable, "args": [str(ppi)]},
    )  # fmt: skip
    fleet.unbake(bake.id)
    pi = Pi.get(Pi.serial == "00000001")
    assert (pi.state, pi.bake_id) == ("broken", None) and "relay stuck" in pi.broken_reason
    assert fleet.set_pi_state("00000001", S.AVAILABLE).state == "available"


def test_recover_frees_a_pi_whose_bake_is_gone(fleet, sd_image_file):
    bake = _baked(fleet, sd_image_file)
    Bake.update(state="failed").where(Bake.id == bake.id).execute()  # a half-finished run
    fleet.recover()
    pi = Pi.get(Pi.serial == "00000001")
    assert (pi.state, pi.bake_id) == ("available", None)


def test_an_address_belongs_to_one_pi(fleet):
    fleet.register_pi("00000001", ip="127.0.0.11")
    fleet.register_pi("00000002", ip="127.0.0.11")
    assert Pi.get(Pi.serial == "00000001").last_ip is None
    fleet.update_pi("00000001", ip="127.0.0.11")
    assert Pi.get(Pi.serial == "00000002").last_ip is None


def test_a_disk_created_on_a_bake_is_in_its_disks_list(fleet, sd_image_file):
    bake = _baked(fleet, sd_image_file)
    disk = fleet.create_disk(4, bake_id=bake.id)
    listing = fleet.bake_root(bake.id) / fleet.settings.disks_list_path
    assert listing.read_text().split()[0] == disk.id
