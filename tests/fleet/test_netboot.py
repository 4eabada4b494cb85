"""fleet.netboot: what a booting Pi is served, who gets recorded, and which address a Pi may
move to."""

from __future__ import annotations

from bakery.fleet import netboot
from bakery.models import Event, Pi, PiState

S = PiState


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


def test_booting_a_baked_pi_pins_its_address_and_exports(fleet, raspios):
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
    fleet, raspios
):
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


def test_a_made_up_serial_from_a_baked_pis_address_leaves_it_its_exports(fleet, bake_pi):
    bake = bake_pi()
    assert fleet.boot_target("0badc0de", "127.0.0.11") is None  # same address, unknown serial
    assert Pi.get(Pi.serial == "00000001").last_ip == "127.0.0.11"
    assert Pi.get(Pi.serial == "0badc0de").last_ip is None
    assert f'Path = "{fleet.bake_root(bake.id)}";' in open(fleet.settings.exports_file).read()


def test_pis_without_a_live_bake_get_nothing_to_boot(fleet):
    fleet.register_pi("00000001", ip="127.0.0.11")
    assert fleet.boot_target("00000001", "127.0.0.11") is None
    fleet.turn_away("00000001")
    assert any("powering off" in e.message for e in Pi.get().events)
    fleet.set_pi_state("00000001", S.BROKEN, "smoke")
    assert fleet.boot_target("00000001", "127.0.0.11") is None


def test_a_pi_with_a_registered_mac_does_not_move_to_another_loopback_address(fleet, bake_pi):
    """The finding: a TFTP request from any loopback address moved a Pi registered with its
    MAC (loopback skipped the neighbour check), and its exports and settings with it."""
    bake = bake_pi(mac="dc:a6:32:00:00:01")
    assert fleet.boot_target("00000001", "127.0.0.12") is None
    assert Pi.get().last_ip == "127.0.0.11"
    assert "Clients = 127.0.0.11;" in open(fleet.settings.exports_file).read()
    assert fleet.boot_target("00000001", "127.0.0.11").bake_id == bake.id


def test_the_simulators_setting_trusts_loopback_addresses(fleet, bake_pi, monkeypatch):
    import dataclasses

    bake_pi(mac="dc:a6:32:00:00:01")
    trusting = dataclasses.replace(fleet.settings, trust_loopback=True)
    monkeypatch.setattr(fleet.context, "settings", trusting)
    assert fleet.boot_target("00000001", "127.0.0.12") is not None
    assert Pi.get().last_ip == "127.0.0.12"


def test_a_baked_pis_move_is_an_event_with_its_before_and_after(fleet, bake_pi):
    bake_pi()
    fleet.boot_target("00000001", "127.0.0.13")
    moved = Pi.get().events.where(Event.kind == "address").get()
    assert moved.message == "address changed from 127.0.0.11 to 127.0.0.13"
    assert (moved.data["previous"], moved.data["ip"]) == ("127.0.0.11", "127.0.0.13")
