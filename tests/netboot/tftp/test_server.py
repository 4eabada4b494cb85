"""The TFTP server, spoken to by real clients (curl, tftp-hpa, a Pi-4-shaped raw UDP
client) on loopback, over a real baked Pi in a temp data dir (SQLite)."""

from __future__ import annotations

import re
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Callable

import pytest

from bakery.metrics import file_kind
from bakery.models import PiState
from bakery.netboot.bootfiles import human_size
from bakery.netboot.tftp import TftpServer, listening_socket
from bakery.netboot.tftp import packets as tp
from bakery.sim.image import REQUIRED_TOOLS, build_sd_image, default_boot_files
from bakery.sim.tftp_client import PI4_BOOT_FILES, Download, PiClient, TftpError, run
from tests.support.metrics import growth, scrape

pytestmark = pytest.mark.tools(*REQUIRED_TOOLS)

SERIAL = "1234abcd"
BOOT_FILES = default_boot_files()


def wait_for(condition: Callable[[], object], timeout: float = 5.0) -> object:
    """Poll until ``condition()`` is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"condition not met within {timeout}s")


@pytest.fixture
def settings(tftp_settings):
    return tftp_settings


@pytest.fixture
def server(tftp_server):
    return tftp_server


@pytest.fixture
def baked(bake_pi):
    return bake_pi(SERIAL, ip="127.0.0.1")


@pytest.fixture
def pi(server, baked) -> PiClient:
    return PiClient(server.address, SERIAL)


def events(fleet, serial: str = SERIAL) -> list:
    return list(fleet.get_pi(serial).events.order_by("id"))


def boot_messages(fleet, serial: str = SERIAL) -> list[str]:
    return [event.message for event in events(fleet, serial) if event.kind == "boot"]


def steps(fleet, step: str, serial: str = SERIAL) -> list:
    """The Pi's boot events of one ``step`` (served, failed, missing, first_request)."""
    return [e for e in events(fleet, serial) if e.kind == "boot" and e.data.get("step") == step]


def request(server, name: str, options: dict | None = None, bind_ip: str = "127.0.0.1"):
    """One raw RRQ; returns the socket and the first answer (packet, server TID)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((bind_ip, 0))
    sock.settimeout(5)
    sock.sendto(tp.encode_request(name, options), server.address)
    return sock, sock.recvfrom(70000)


def error_code(server, name: str) -> int:
    sock, (packet, _) = request(server, name)
    sock.close()
    return tp.parse_error(packet)[0]


# -- real clients ------------------------------------------------------------------------


@pytest.mark.tools("curl")
@pytest.mark.parametrize("blksize", [[], ["--tftp-blksize", "1468"]], ids=["512", "1468"])
def test_curl_gets_config_txt(pi, server, blksize):
    url = f"tftp://127.0.0.1:{server.address[1]}/{SERIAL}/config.txt"
    fetched = subprocess.run(["curl", "-sf", *blksize, url], capture_output=True, check=True)
    assert fetched.stdout == BOOT_FILES["config.txt"]


@pytest.mark.tools("tftp")
def test_tftp_hpa_client_gets_start4_elf(pi, server, tmp_path):
    out = tmp_path / "start4.elf"
    command = ["tftp", "127.0.0.1", str(server.address[1]), "-m", "binary"]
    subprocess.run([*command, "-c", "get", f"{SERIAL}/start4.elf", str(out)], check=True)
    assert out.read_bytes() == BOOT_FILES["start4.elf"]


@pytest.mark.tools("curl")
def test_unprefixed_requests_come_from_the_firmware_dir(server, settings):
    (settings.firmware_path / "bootcode.bin").write_bytes(b"pi 3 second stage" * 100)
    url = f"tftp://127.0.0.1:{server.address[1]}/bootcode.bin"
    fetched = subprocess.run(["curl", "-sf", url], capture_output=True, check=True)
    assert fetched.stdout == b"pi 3 second stage" * 100


# -- what a Pi 4 does --------------------------------------------------------------------


def test_pi4_boot_gets_every_file_with_its_cmdline_for_nfs(pi, baked, fleet):
    fetched = pi.boot()
    for name in PI4_BOOT_FILES:
        if name != "cmdline.txt":
            assert fetched[name] == BOOT_FILES[name], name
    cmdline = fetched["cmdline.txt"].decode()
    root = fleet.bake_root(baked.id)
    assert f"root=/dev/nfs nfsroot=127.0.0.1:{root},vers=3,tcp" in cmdline
    assert "PARTUUID" not in cmdline


def test_probe_answers_tsize_and_early_terminate_is_not_a_failure(pi, server, fleet):
    assert pi.probe("kernel8.img") == {"tsize": str(len(BOOT_FILES["kernel8.img"]))}
    wait_for(lambda: server.active_transfers == 0)
    download = pi.download(f"{SERIAL}/kernel8.img", {"tsize": 0, "blksize": 1468})
    assert download.oack == {"tsize": str(len(BOOT_FILES["kernel8.img"])), "blksize": "1468"}
    assert download.result() == BOOT_FILES["kernel8.img"]
    wait_for(lambda: steps(fleet, "served"))
    assert steps(fleet, "failed") == []
    served = steps(fleet, "served")
    assert [e.data["file"] for e in served] == ["kernel8.img"]
    size = human_size(len(BOOT_FILES["kernel8.img"]))
    assert re.fullmatch(rf"kernel8\.img {size} in \d+\.\d\d s", served[0].message)


def test_blksize_is_clamped_to_the_configured_maximum(pi):
    download = pi.download(f"{SERIAL}/start4.elf", {"blksize": 65464})
    assert download.oack == {"blksize": "1468"}
    assert download.result() == BOOT_FILES["start4.elf"]


def test_pi5_double_slash_is_collapsed(pi):
    assert pi.download(f"{SERIAL}//config.txt", {"tsize": 0}).result() == BOOT_FILES["config.txt"]


def test_file_names_match_case_insensitively_like_fat(pi):
    name = f"{SERIAL}/BCM2711-RPI-4-B.DTB"
    assert pi.download(name).result() == BOOT_FILES["bcm2711-rpi-4-b.dtb"]


def test_serial_prefix_is_compared_as_a_number(pi):
    assert pi.download("1234ABCD/fixup4.dat").result() == BOOT_FILES["fixup4.dat"]


def test_missing_file_is_error_1(pi, server):
    assert error_code(server, f"{SERIAL}/recovery.elf") == tp.ErrorCode.FILE_NOT_FOUND


def test_a_not_found_is_on_the_timeline_and_a_pi5_probe_is_told_from_a_fault(pi, server, fleet):
    for name in ("pieeprom.sig", "overlay_map.dtb", "armstub8-2712.bin", "missing.dtb"):
        assert error_code(server, f"{SERIAL}/{name}") == tp.ErrorCode.FILE_NOT_FOUND

    wait_for(lambda: "no such file: missing.dtb" in boot_messages(fleet))
    not_found = {e.data["file"]: e.data["probe"] for e in steps(fleet, "missing")}
    assert not_found == {"pieeprom.sig": True, "overlay_map.dtb": True,
                         "armstub8-2712.bin": True, "missing.dtb": False}  # fmt: skip
    assert steps(fleet, "failed") == []


def test_served_config_txt_drops_auto_initramfs(server, fleet, tmp_path):
    config = b"[all]\nauto_initramfs=1\ndtoverlay=vc4-kms-v3d\n"
    image = build_sd_image(tmp_path / "initramfs.img", boot={**BOOT_FILES, "config.txt": config})
    with open(image, "rb") as upload:
        fleet.import_bakeform("bookworm", upload)
    fleet.register_pi(SERIAL, ip="127.0.0.1")
    fleet.bake("bookworm")
    served = PiClient(server.address, SERIAL).get("config.txt")
    assert served == b"[all]\ndtoverlay=vc4-kms-v3d\n"


def test_a_bakeform_replaced_under_a_live_bake_leaves_it_booting_what_it_was_baked_with(
    pi, server, fleet, tmp_path
):
    newer_cmdline = b"console=tty1 newer=1 root=PARTUUID=4e639091-02 rootwait\n"
    newer = {**BOOT_FILES, "kernel8.img": b"a newer kernel\n" * 512, "cmdline.txt": newer_cmdline}
    with open(build_sd_image(tmp_path / "newer.img", boot=newer), "rb") as upload:
        fleet.import_bakeform("raspios", upload, replace=True)
    assert pi.get("kernel8.img") == BOOT_FILES["kernel8.img"]  # matches the modules in its root
    assert b"newer=1" not in pi.get("cmdline.txt")
    fleet.register_pi("0000beef", ip="127.0.0.2")
    fleet.bake("raspios", serial="0000beef")
    next_pi = PiClient(server.address, "0000beef", bind_ip="127.0.0.2")
    assert next_pi.get("kernel8.img") == newer["kernel8.img"]
    assert next_pi.get("cmdline.txt").startswith(b"console=tty1 newer=1 root=/dev/nfs ")


def test_pis_baked_from_one_bakeform_share_one_cached_copy_of_each_file(pi, server, fleet):
    assert pi.get("kernel8.img") == BOOT_FILES["kernel8.img"]
    cached = server.cache.used
    fleet.register_pi("0000beef", ip="127.0.0.2")
    fleet.bake("raspios", serial="0000beef")
    other = PiClient(server.address, "0000beef", bind_ip="127.0.0.2")
    assert other.get("kernel8.img") == BOOT_FILES["kernel8.img"]
    assert server.cache.used == cached


def test_workers_sharing_the_port_each_get_every_request_of_their_pis(settings, fleet):
    """Two servers on one port, as ``bakery tftp --workers 2`` runs them: a Pi asks for
    each file from a new port, yet all its requests reach the same one of them."""
    first = TftpServer(
        settings, fleet.boot_source(), sock=listening_socket("127.0.0.1", 0, workers=2)
    )
    port = first.address[1]
    second = TftpServer(settings, fleet.boot_source(), sock=listening_socket("127.0.0.1", port, 2))
    for worker in (first, second):
        worker.start()
    try:
        holders = {}
        for address, serial in (("127.0.0.2", "0000a002"), ("127.0.0.3", "0000a003")):
            for _ in range(12):
                sock, _answer = request(first, f"{serial}/start4.elf", bind_ip=address)
                sock.close()
            holders[serial] = [worker for worker in (first, second) if serial in worker.boots]
    finally:
        for worker in (first, second):
            worker.stop()
    assert len(holders["0000a002"]) == len(holders["0000a003"]) == 1
    assert holders["0000a002"] != holders["0000a003"]  # and the Pis are shared out


# -- refusing what is not a boot file ----------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "../../etc/passwd",
        f"{SERIAL}/../../../etc/passwd",
        "/etc/passwd",
        f"{SERIAL}/overlays/../../x",
        f"{SERIAL}/../secret",
        "zzzzzzzz/start4.elf",
        f"{SERIAL}/con\x01fig.txt",
        f"{SERIAL}\\..\\secret",
    ],
)
def test_paths_outside_the_boot_tree_are_refused_without_reading(pi, server, fleet, baked, name):
    (fleet.bake_dir(baked.id) / "secret").write_text("not for Pis")  # next to its boot files
    assert error_code(server, name) == tp.ErrorCode.ACCESS_VIOLATION
    assert server.cache.used == 0


def test_nul_byte_in_a_name_is_an_error(pi, server):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(5)
    sock.sendto(b"\0\x01" + SERIAL.encode() + b"/config.txt\0../../x\0octet\0", server.address)
    packet, _ = sock.recvfrom(1000)
    sock.close()
    assert tp.opcode_of(packet) == tp.Opcode.ERROR
    assert server.cache.used == 0


# -- the protocol under loss and repetition ----------------------------------------------


def test_unacknowledged_block_is_sent_again_after_the_timeout(pi, server):
    sock, (first, tid) = request(server, f"{SERIAL}/start4.elf")
    sent = time.monotonic()
    again, _ = sock.recvfrom(1000)  # the first DATA is "lost": not ACKed
    waited = time.monotonic() - sent
    sock.close()
    assert again == first and tp.parse_data(first)[0] == 1
    assert 0.8 < waited < 2.0


def test_vanished_client_frees_its_transfer_and_is_a_failure_event(pi, server, fleet):
    sock, _ = request(server, f"{SERIAL}/kernel8.img", {"blksize": 512})
    assert server.active_transfers == 1
    sock.close()
    wait_for(lambda: server.active_transfers == 0, timeout=6)
    failure = wait_for(lambda: steps(fleet, "failed"))
    assert failure[0].data["file"] == "kernel8.img"
    assert failure[0].message.startswith("kernel8.img failed: ")


def test_duplicate_rrq_from_the_same_port_is_one_transfer(pi, server):
    sock, (oack, tid) = request(server, f"{SERIAL}/start4.elf", {"tsize": 0})
    sock.sendto(tp.encode_request(f"{SERIAL}/start4.elf", {"tsize": 0}), server.address)
    assert tp.parse_oack(oack) == {"tsize": str(len(BOOT_FILES["start4.elf"]))}
    sock.sendto(tp.encode_ack(0), tid)
    first_block, sender = sock.recvfrom(1000)
    assert tp.parse_data(first_block)[0] == 1 and sender == tid
    assert server.active_transfers == 1
    sock.close()


def test_block_numbers_roll_over_to_zero(server, settings):
    content = bytes(range(256)) * 2100  # 537,600 bytes: 67,200 blocks of 8
    (settings.firmware_path / "big.bin").write_bytes(content)
    download = Download(server.address, "big.bin", {"blksize": 8})
    run([iter([download])])
    assert download.result() == content
    assert download.blocks > 0x10000


# -- the fleet behind the requests ---------------------------------------------------------


def test_unknown_serial_is_discovered_and_not_found(server, fleet):
    assert error_code(server, "0badf00d/start4.elf") == tp.ErrorCode.FILE_NOT_FOUND
    discovered = fleet.get_pi("0badf00d")
    assert discovered.state == PiState.DISCOVERED.value
    assert discovered.last_ip == "127.0.0.1"
    assert discovered.model == "4B"


def test_pi_without_a_bake_is_not_found_and_powered_off(server, fleet):
    fleet.register_pi(SERIAL, ip="127.0.0.1", power_driver="manual")
    assert error_code(server, f"{SERIAL}/start4.elf") == tp.ErrorCode.FILE_NOT_FOUND
    power = wait_for(lambda: [e for e in events(fleet) if e.kind == "power"])
    assert power[0].data["action"] == "off"
    assert "booting without a bake: powering off" in boot_messages(fleet)


def test_broken_pi_is_not_found(pi, server, fleet):
    fleet.set_pi_state(SERIAL, PiState.BROKEN, "bad SD slot")
    assert error_code(server, f"{SERIAL}/start4.elf") == tp.ErrorCode.FILE_NOT_FOUND


def test_address_is_pinned_and_exported_before_cmdline_is_answered(server, fleet, baked, settings):
    fleet.update_pi(SERIAL, ip="127.0.0.50")
    assert "127.0.0.50" in open(settings.exports_file).read()
    moved = PiClient(server.address, SERIAL, bind_ip="127.0.0.7")
    moved.get("cmdline.txt")
    assert "127.0.0.7" in open(settings.exports_file).read()
    assert fleet.get_pi(SERIAL).last_ip == "127.0.0.7"


def test_boot_timeline_has_first_request_files_and_cmdline(pi, fleet):
    pi.boot()
    # Events are written as each transfer ends, so wait for the last file's too.
    wait_for(lambda: set(PI4_BOOT_FILES) <= {e.data["file"] for e in steps(fleet, "served")})
    timeline = [e for e in events(fleet) if e.kind == "boot"]
    assert timeline[0].message == "first request: start4.elf from 127.0.0.1"
    assert timeline[0].data == {"step": "first_request", "file": "start4.elf", "ip": "127.0.0.1"}
    served = {e.data["file"]: e.data["size"] for e in steps(fleet, "served")}
    assert {name: size for name, size in served.items() if name != "cmdline.txt"} == {
        name: len(BOOT_FILES[name]) for name in PI4_BOOT_FILES if name != "cmdline.txt"
    }
    assert len(steps(fleet, "first_request")) == 1


def test_a_cmdline_request_from_another_loopback_address_moves_nothing(server, fleet, bake_pi):
    """The finding, through the real server: a local process asking for a Pi's
    cmdline.txt from another loopback address took the Pi's root export and settings."""
    bake = bake_pi("0000beef", ip="127.0.0.2", mac="dc:a6:32:00:be:ef")
    spoofer = PiClient(server.address, "0000beef", bind_ip="127.0.0.3")
    with pytest.raises(TftpError, match="not found"):
        spoofer.get("cmdline.txt")
    assert fleet.get_pi("0000beef").last_ip == "127.0.0.2"
    assert f'Path = "{fleet.bake_root(bake.id)}";' in open(fleet.settings.exports_file).read()
    assert "Clients = 127.0.0.3;" not in open(fleet.settings.exports_file).read()
    real = PiClient(server.address, "0000beef", bind_ip="127.0.0.2")
    assert b"nfsroot=" in real.get("cmdline.txt")


def test_a_pi_unbaked_and_baked_again_at_once_gets_its_new_bakes_files(pi, server, fleet, baked):
    assert pi.get("kernel8.img") == BOOT_FILES["kernel8.img"]  # its target is remembered

    fleet.unbake(baked.id)
    again = fleet.bake("raspios", serial=SERIAL)

    assert pi.get("kernel8.img") == BOOT_FILES["kernel8.img"], "not the old bake's deleted files"
    assert fleet.get_pi(SERIAL).bake_id == again.id


# -- what is counted -------------------------------------------------------------------


def test_each_file_sent_is_counted_by_kind_with_its_bytes_and_probes_are_not(
    pi, server, fleet, settings
):
    (settings.firmware_path / "bootcode.bin").write_bytes(b"pi 3 second stage" * 100)
    before = scrape()
    fetched = pi.boot()  # a probe before each file
    bootcode = pi.download("bootcode.bin").result()
    wait_for(lambda: server.active_transfers == 0)
    after = scrape()

    served = wait_for(lambda: len(steps(fleet, "served")) == len(PI4_BOOT_FILES))
    kinds = Counter(file_kind(event.data["file"]) for event in steps(fleet, "served"))
    kinds["firmware"] += 1  # bootcode.bin, on no Pi's timeline
    transfers = growth(before, after, "bakery_tftp_transfers_total", "kind")
    sent = growth(before, after, "bakery_tftp_bytes_total", "kind")
    assert served and transfers == dict(kinds)
    assert transfers == {
        "firmware": 3,
        "config": 1,
        "dtb": 1,
        "overlay": 1,
        "cmdline": 1,
        "kernel": 1,
    }
    assert sum(sent.values()) == sum(map(len, fetched.values())) + len(bootcode)
    assert sent["kernel"] == len(BOOT_FILES["kernel8.img"])


def test_a_transfer_that_never_ends_is_counted_as_a_failure_of_its_kind(pi, server):
    before = scrape()
    sock, _ = request(server, f"{SERIAL}/kernel8.img", {"blksize": 512})
    sock.close()
    wait_for(lambda: server.active_transfers == 0, timeout=6)

    assert growth(before, scrape(), "bakery_tftp_failures_total", "kind") == {"kernel": 1}
