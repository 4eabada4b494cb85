"""Each model's boot sequence, spoken by a simulated Pi to Bakery's real TFTP server on
loopback (no root: loopback mode, no DHCP, NFS step skipped)."""

from __future__ import annotations

import socket

import pytest

from bakery.sim.bootloader import BootConfig, BootFailure, parse_nfsroot
from bakery.sim.image import REQUIRED_TOOLS, build_sd_image, fleet_boot_files
from bakery.sim.models import SimPi
from bakery.sim.network import LOOPBACK_NFS_REASON
from bakery.sim.simulator import Simulator
from bakery.sim.wait import wait_until

pytestmark = pytest.mark.tools(*REQUIRED_TOOLS)


def boot(simulator: Simulator) -> SimPi:
    """Power the first Pi on and wait until its boot ends."""
    pi = next(iter(simulator.pis.values()))
    simulator.power_on(pi.serial)
    wait_until(lambda: pi.state in ("booted", "failed"), 20, what=f"Pi {pi.serial} to boot")
    return pi


def downloaded(pi: SimPi) -> list[str]:
    """The files the Pi downloaded, in order (probes are not in the timeline)."""
    return [entry.detail.split(" ")[0] for entry in pi.timeline if entry.step == "tftp"][1:]


def test_pi4_probes_start4_under_its_serial_then_loads_firmware_dtb_cmdline_and_kernel(
    make_fleet,
):
    pi = boot(make_fleet("4B"))

    serial = pi.serial
    assert pi.state == "booted", pi.reason
    assert downloaded(pi) == [
        f"{serial}/config.txt",
        f"{serial}/start4.elf",
        f"{serial}/fixup4.dat",
        f"{serial}/config.txt",
        f"{serial}/bcm2711-rpi-4-b.dtb",
        f"{serial}/overlays/vc4-kms-v3d.dtbo",
        f"{serial}/cmdline.txt",
        f"{serial}/kernel8.img",
    ]


def test_pi5_asks_config_txt_again_with_a_double_slash_and_loads_no_start_elf(make_fleet):
    pi = boot(make_fleet("5"))

    serial = pi.serial
    assert pi.state == "booted", pi.reason
    assert downloaded(pi) == [
        f"{serial}/config.txt",
        f"{serial}//config.txt",
        f"{serial}/bcm2712-rpi-5-b.dtb",
        f"{serial}/overlays/vc4-kms-v3d.dtbo",
        f"{serial}/cmdline.txt",
        f"{serial}/kernel_2712.img",
    ]
    assert not any("start" in name or "fixup" in name for name in downloaded(pi))


def test_pi3bplus_rom_loads_bootcode_from_the_root_then_start_elf_under_its_serial(make_fleet):
    pi = boot(make_fleet("3B+"))

    serial = pi.serial
    assert pi.state == "booted", pi.reason
    assert downloaded(pi) == [
        "bootcode.bin",
        f"{serial}/config.txt",
        f"{serial}/start.elf",
        f"{serial}/fixup.dat",
        f"{serial}/config.txt",
        f"{serial}/bcm2710-rpi-3-b-plus.dtb",
        f"{serial}/overlays/vc4-kms-v3d.dtbo",
        f"{serial}/cmdline.txt",
        f"{serial}/kernel8.img",
    ]


def test_loopback_boot_reads_its_nfsroot_from_cmdline_and_says_why_nfs_is_skipped(
    make_fleet, settings
):
    pi = boot(make_fleet("4B"))

    nfs = next(entry.detail for entry in pi.timeline if entry.step == "nfs")
    assert nfs.startswith(f"{settings.nfs_server}:{settings.root}/bakes/")
    assert LOOPBACK_NFS_REASON in nfs
    assert pi.status()["state"] == "on" and pi.status()["boot"] == "booted"


def test_bakery_sees_each_simulated_pi_at_its_own_loopback_address(make_fleet, fleet):
    simulator = make_fleet("4B", "5")
    for pi in simulator.pis.values():
        simulator.power_on(pi.serial)
    wait_until(lambda: all(p.state == "booted" for p in simulator.pis.values()), 20)

    for pi in simulator.pis.values():
        messages = [event.message for event in fleet.get_pi(pi.serial).events]
        assert any(message.startswith("cmdline.txt ") for message in messages)
        assert fleet.get_pi(pi.serial).last_ip == pi.address


def test_a_missing_boot_file_fails_the_boot_with_its_name(make_fleet, tmp_path):
    boot_files = fleet_boot_files()
    del boot_files["fixup4.dat"]
    image = build_sd_image(tmp_path / "broken.img", boot=boot_files)

    pi = boot(make_fleet("4B", image=image))

    assert pi.state == "failed"
    assert pi.reason == f"TFTP: {pi.serial}/fixup4.dat not found"
    assert pi.status()["state"] == "on", "a failed Pi stays powered, on its rainbow screen"


def test_a_pi_without_a_bake_falls_back_to_the_tftp_root_and_fails(make_fleet):
    pi = boot(make_fleet("4B", bake=False))

    assert pi.state == "failed"
    assert pi.reason == "TFTP: start4.elf not found"


@pytest.fixture
def silent_server():
    """A UDP port that receives and never answers: a TFTP server that hangs."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(10)
        yield sock


def test_a_server_that_never_answers_fails_the_boot_after_the_file_timeout(
    make_fleet, silent_server
):
    pi = boot(make_fleet("4B", server=silent_server.getsockname()))

    assert pi.state == "failed"
    assert pi.reason == f"TFTP: no answer for {pi.serial}/start4.elf in 1 s"


def test_power_off_mid_boot_stops_the_boot_and_leaves_the_pi_off(make_fleet, silent_server):
    simulator = make_fleet("4B", server=silent_server.getsockname())
    pi = next(iter(simulator.pis.values()))
    simulator.power_on(pi.serial)
    silent_server.recvfrom(2048)  # the Pi's first RRQ: it is mid-boot

    simulator.power_off(pi.serial)
    wait_until(lambda: not simulator.booting(pi.serial), 5, what="the boot thread to stop")

    assert (pi.powered, pi.state, pi.reason) == (False, "off", "")
    assert [(entry.step, entry.detail) for entry in pi.timeline[-1:]] == [("power", "off")]


def test_a_power_cycle_boots_the_pi_again_from_the_start(make_fleet):
    simulator = make_fleet("4B")
    pi = boot(simulator)
    first_boot = len(pi.timeline)

    simulator.power_off(pi.serial)
    pi = boot(simulator)

    assert pi.state == "booted" and len(pi.power_ons) == 2
    again = [entry.detail for entry in pi.timeline[first_boot:] if entry.step == "tftp"]
    assert f"{pi.serial}/kernel8.img (59392 bytes)" in again


def test_nfsroot_is_read_from_the_kernel_command_line():
    cmdline = "console=tty1 root=/dev/nfs nfsroot=10.0.0.1:/srv/bakes/ab/root,vers=3,tcp rw"

    assert parse_nfsroot(cmdline) == ("10.0.0.1", "/srv/bakes/ab/root")
    with pytest.raises(BootFailure, match="no nfsroot"):
        parse_nfsroot("console=tty1 root=PARTUUID=4e639091-02 rootwait")


def test_config_txt_names_the_kernel_and_overlays_the_pi_loads():
    text = b"[all]\nkernel=zImage # custom\ndtoverlay=disable-bt,foo=1\n#dtoverlay=off\n"

    assert BootConfig.parse(text) == BootConfig("zImage", ("disable-bt",))
    assert BootConfig.parse(None) == BootConfig(None, ())
