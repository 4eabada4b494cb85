"""An unbake excludes every writer to the same bake, through the real gunicorn: agent
settings sent or a disk attached while it runs are refused, never written into a root
being deleted, and the unbake finishes with nothing of the bake left on disk."""

from __future__ import annotations

import threading

import pytest
import requests

from bakery.sim.wait import wait_until
from tests.conftest import install_gated_ppi, upload_raspios

SETTINGS = {"agent_id": "a-1", "mbus": "nats://u:password-1@10.0.0.6:4222", "disks": {}}


class Background(threading.Thread):
    """One request on its own thread (it may wait on the bake's lock); ``answer`` after."""

    def __init__(self, send) -> None:
        super().__init__(daemon=True)
        self.send = send
        self.answer: requests.Response | None = None

    def run(self) -> None:
        self.answer = self.send()

    def result(self) -> requests.Response:
        self.join(timeout=60)
        assert self.answer is not None, "the request never came back"
        return self.answer


@pytest.fixture
def unbaking(live_server, sd_image_file, tmp_path, ppi_dir):
    """A live server and a bake whose unbake is under way, held at its power-off until
    ``open_gate()``; yields (server, session, bake id, the unbake request, open_gate)."""
    server = live_server(workers=3, power_timeout=120)
    gate = tmp_path / "gate"
    ppi = install_gated_ppi(ppi_dir, gate, "poweroff")
    api = server.session()
    url = f"{server.url}/api/v1"
    upload_raspios(server, sd_image_file)
    pi = {"serial": "00000001", "ip": "127.0.0.11", "power_driver": "ppi",
          "power_settings": {"program": ppi}}  # fmt: skip
    assert api.post(f"{url}/pis", json=pi).status_code == 201
    bake = api.post(f"{url}/bakes", json={"bakeform": "raspios", "agent_settings": SETTINGS})
    bake_id = bake.json()["id"]
    unbake = Background(lambda: server.session().delete(f"{url}/bakes/{bake_id}"))
    unbake.start()
    wait_until(lambda: (gate / "started").exists(), what="the unbake to reach power-off")
    try:
        yield server, api, bake_id, unbake, lambda: (gate / "open").touch()
    finally:
        (gate / "open").touch()


def test_agent_settings_sent_during_an_unbake_are_refused_and_the_unbake_finishes(unbaking):
    server, api, bake_id, unbake, open_gate = unbaking
    url = f"{server.url}/api/v1/bakes/{bake_id}/agent-settings"
    put = Background(lambda: api.put(url, json={**SETTINGS, "agent_id": "a-2"}))
    put.start()
    open_gate()

    answer = put.result()
    unbaked = unbake.result()

    assert answer.status_code in (404, 409), answer.text
    assert answer.json()["error"]["code"] in ("bake_not_found", "bake_in_progress")
    assert unbaked.status_code == 200, unbaked.text
    assert unbaked.json()["state"] == "unbaked"
    assert not (server.root / "bakes" / bake_id).exists()


def test_a_disk_attached_during_an_unbake_is_refused_and_kept(unbaking):
    server, api, bake_id, unbake, open_gate = unbaking
    disk = api.post(f"{server.url}/api/v1/disks", json={"size_mib": 4}).json()
    url = f"{server.url}/api/v1/disks/{disk['id']}/attach"
    attach = Background(lambda: api.post(url, json={"bake_id": bake_id}))
    attach.start()
    open_gate()

    answer = attach.result()

    assert answer.status_code in (404, 409), answer.text
    assert unbake.result().json()["state"] == "unbaked"
    kept = api.get(f"{server.url}/api/v1/disks/{disk['id']}").json()
    assert kept["bake_id"] is None
    assert (server.root / "disks" / disk["id"] / "disk.img").exists()
    assert not (server.root / "bakes" / bake_id).exists()
