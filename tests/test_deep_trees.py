"""A tree 2,000 directories deep, through the real gunicorn: an image holding one is
refused with a clear error and leaves nothing behind, a crash's leftover one does not
stop the next start, and a Pi that writes one into its own root is still unbaked."""

from __future__ import annotations

import pytest

from bakery.sim.image import REQUIRED_TOOLS
from bakery.sim.wait import wait_until
from tests.conftest import upload_raspios
from tests.support.deep import deep_root_image

pytestmark = [pytest.mark.root, pytest.mark.tools(*REQUIRED_TOOLS, "debugfs")]


def test_an_image_with_a_root_2000_directories_deep_is_refused_and_leaves_nothing(
    live_server, tmp_path
):
    server = live_server()
    api = server.session()
    image = deep_root_image(tmp_path / "deep.img", 2000)

    with open(image, "rb") as stream:
        answer = api.put(f"{server.url}/api/v1/bakeforms/deep", data=stream)

    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["code"] == "root_too_large" and "deeper than 256" in error["message"]
    assert list((server.root / "bakeforms").iterdir()) == []
    assert api.get(f"{server.url}/api/v1/bakeforms").json() == []


def test_a_deep_tree_a_crash_left_behind_does_not_stop_the_next_start(live_server, deep_chain):
    server = live_server()
    server.kill()
    leftover = server.root / "bakeforms" / ".incoming-crashed"
    leftover.mkdir(parents=True)
    deep_chain(leftover, 2000)

    server.start()

    assert not leftover.exists()
    assert server.session().get(f"{server.url}/api/v1/health").status_code == 200


def test_a_pi_that_writes_a_2000_deep_tree_into_its_root_is_still_unbaked(
    live_server, sd_image_file, deep_chain
):
    server = live_server()
    api = server.session()
    url = f"{server.url}/api/v1"
    upload_raspios(server, sd_image_file)
    api.post(f"{url}/pis", json={"serial": "0000beef", "ip": "127.0.0.1"})
    bake = api.post(f"{url}/bakes", json={"bakeform": "raspios"}).json()
    deep_chain(server.root / "bakes" / bake["id"] / "root/home/pi/deep", 2000)  # as over NFS

    answer = api.delete(f"{url}/bakes/{bake['id']}")

    assert answer.status_code == 200, answer.text
    assert answer.json()["state"] == "unbaked"
    assert not (server.root / "bakes" / bake["id"]).exists()
    pi = wait_until(lambda: api.get(f"{url}/pis/0000beef").json(), what="the Pi")
    assert pi["state"] == "available"
