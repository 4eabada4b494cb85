"""The HTTP boot server in this process on loopback, over a real fleet: each HTTP-booting
Pi gets its own bake's signed boot.img from its own address, and nobody else does."""

from __future__ import annotations

import dataclasses
import http.client
import threading

import pytest

from bakery.errors import InvalidInput
from bakery.netboot import bootimage
from bakery.netboot.httpboot import HttpBootServer
from bakery.sim import http_boot
from bakery.sim.http_boot import EepromKey
from bakery.sim.server import free_port
from tests.support.metrics import growth, scrape

pytestmark = pytest.mark.tools("mkfs.fat", "mcopy", "mtype", "openssl")

PI, PI_IP = "00000001", "127.0.0.11"
OTHER, OTHER_IP = "00000002", "127.0.0.12"


@pytest.fixture
def settings(settings):
    return dataclasses.replace(settings, http_boot_bind=f"127.0.0.1:{free_port()}")


@pytest.fixture
def server(settings, fleet):
    running = HttpBootServer(settings, fleet.boot_source())
    thread = threading.Thread(target=running.serve_forever, daemon=True)
    thread.start()
    yield running
    running.shutdown()
    running.server_close()
    thread.join(10)


def get(server, path: str, source: str, method: str = "GET") -> tuple[int, bytes, dict]:
    connection = http.client.HTTPConnection(*server.server_address[:2], timeout=10,
                                            source_address=(source, 0))  # fmt: skip
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.read(), dict(response.getheaders())
    finally:
        connection.close()


def messages(fleet, serial: str) -> list[str]:
    return [event.message for event in fleet.timeline(serial)]


def test_a_pi_gets_its_bakes_signed_image_and_the_download_is_on_its_timeline(
    server, fleet, bake_pi, settings
):
    bake = bake_pi(PI, PI_IP, boot_protocol="http")

    status, image, _ = get(server, f"/{PI}/boot.img", PI_IP)
    sig_status, signature, _ = get(server, f"/{PI}/boot.sig", PI_IP)

    assert (status, sig_status) == (200, 200)
    key = EepromKey.from_pem(bootimage.public_key_pem(settings.http_boot_key_path))
    http_boot.verify(image, signature.decode(), key)
    cmdline = http_boot.read_files(image, ["cmdline.txt"])["cmdline.txt"]
    assert cmdline is not None and str(fleet.bake_root(bake.id)).encode() in cmdline
    served = [e for e in fleet.timeline(PI) if e.data.get("step") == "served"]
    assert [e.data["file"] for e in served] == ["boot.img", "boot.sig"]
    assert served[0].data["size"] == len(image)
    assert served[0].message.startswith("boot.img ") and served[0].message.endswith(" over HTTP")
    assert served[-1].bake_id == bake.id


def test_head_says_the_size_without_sending_the_image(server, bake_pi):
    bake_pi(PI, PI_IP, boot_protocol="http")
    _, image, _ = get(server, f"/{PI}/boot.img", PI_IP)

    status, body, headers = get(server, f"/{PI}/boot.img", PI_IP, method="HEAD")

    assert (status, body) == (200, b"")
    assert int(headers["Content-Length"]) == len(image)


def test_each_file_sent_is_counted_by_kind_with_its_bytes_and_a_head_is_not(server, bake_pi):
    bake_pi(PI, PI_IP, boot_protocol="http")
    before = scrape()

    _, image, _ = get(server, f"/{PI}/boot.img", PI_IP)
    _, signature, _ = get(server, f"/{PI}/boot.sig", PI_IP)
    get(server, f"/{PI}/boot.img", PI_IP, method="HEAD")

    after = scrape()
    downloads = growth(before, after, "bakery_http_boot_downloads_total", "kind")
    sent = growth(before, after, "bakery_http_boot_bytes_total", "kind")
    assert downloads == {"boot_image": 1, "signature": 1}
    assert sent == {"boot_image": len(image), "signature": len(signature)}


def test_another_hosts_request_for_a_pis_image_gets_nothing(server, fleet, bake_pi):
    bake_pi(OTHER, OTHER_IP, boot_protocol="http", mac="dc:a6:32:00:00:02")
    bake_pi(PI, PI_IP, boot_protocol="http")

    status, body, _ = get(server, f"/{OTHER}/boot.img", PI_IP)
    sig_status, _, _ = get(server, f"/{OTHER}/boot.sig", PI_IP)

    assert (status, sig_status) == (404, 404)
    assert b"rsa2048" not in body
    assert fleet.get_pi(OTHER).last_ip == OTHER_IP, "the Pi's exports stay where they were"
    assert any("not taken" in message for message in messages(fleet, OTHER))
    assert not [e for e in fleet.timeline(OTHER) if e.data.get("step") == "served"]


def test_a_bake_that_boots_over_tftp_is_not_served_over_http(server, fleet, bake_pi):
    bake = bake_pi(PI, PI_IP)

    status, _, _ = get(server, f"/{PI}/boot.img", PI_IP)

    assert status == 404
    assert "no such file: boot.img (the bake boots over TFTP)" in messages(fleet, PI)
    assert not (fleet.bake_dir(bake.id) / "http").exists()


@pytest.mark.parametrize(
    "path",
    [
        "/boot.img",
        f"/{PI}/config.txt",
        f"/{PI}/../{OTHER}/boot.img",
        f"/{PI}/boot.img/..",
        f"/{PI}/%2e%2e/boot.img",
        "/net_install/boot.img",
        f"/{PI}/BOOT.IMG",
        "/" + "a" * 5000,
    ],
)
def test_a_path_that_is_not_a_serials_boot_file_is_404(server, fleet, bake_pi, path):
    bake = bake_pi(PI, PI_IP, boot_protocol="http")

    status, _, _ = get(server, path, PI_IP)

    assert status in (400, 404, 414)
    assert not (fleet.bake_dir(bake.id) / "http").exists()


def test_unbaking_removes_the_bakes_image(server, fleet, bake_pi):
    bake = bake_pi(PI, PI_IP, boot_protocol="http")
    assert get(server, f"/{PI}/boot.img", PI_IP)[0] == 200

    fleet.unbake(bake.id)

    assert not fleet.bake_dir(bake.id).exists()
    assert list(fleet.bake_dir(bake.id).parent.iterdir()) == [], "no trash tree left"
    assert get(server, f"/{PI}/boot.img", PI_IP)[0] == 404


def test_a_free_pi_asking_again_and_again_is_powered_off_once(server, fleet):
    fleet.register_pi(PI, ip=PI_IP, boot_protocol="http")

    answers = [get(server, f"/{PI}/boot.img", PI_IP)[0] for _ in range(5)]

    assert answers == [404] * 5
    turned_away = [m for m in messages(fleet, PI) if m == "booting without a bake: powering off"]
    assert len(turned_away) == 1


def test_a_pi_3_cannot_be_set_to_boot_over_http(fleet, settings):
    with pytest.raises(InvalidInput, match="Pi 3B bootloader cannot boot over HTTP"):
        fleet.register_pi(PI, ip=PI_IP, model="3B", boot_protocol="http")
    fleet.register_pi(OTHER, ip=OTHER_IP, model="3B+")
    with pytest.raises(InvalidInput, match="boot_protocol"):
        fleet.update_pi(OTHER, boot_protocol="http")

    assert fleet.get_pi(OTHER).boot_protocol == "tftp"
