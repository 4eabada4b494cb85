"""Allocation under load: many bake requests at once through a real gunicorn."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.conftest import upload_raspios

PIS = 10
REQUESTS = 40


@pytest.fixture
def server(live_server):
    return live_server(workers=4)


def test_forty_bakes_at_once_on_ten_pis_never_share_a_pi(server, sd_image_file):
    api = server.session()
    upload_raspios(server, sd_image_file)
    for i in range(PIS):
        body = {"serial": f"{i + 1:08x}", "ip": f"127.0.1.{i + 1}"}
        assert api.post(f"{server.url}/api/v1/pis", json=body).status_code == 201

    def bake(_: int) -> requests.Response:
        return requests.post(
            f"{server.url}/api/v1/bakes",
            json={"bakeform": "raspios"},
            headers=api.headers,
            timeout=120,
        )

    with ThreadPoolExecutor(REQUESTS) as pool:
        responses = list(pool.map(bake, range(REQUESTS)))

    made = [r.json() for r in responses if r.status_code == 201]
    refused = [r.json() for r in responses if r.status_code == 503]
    assert len(made) == PIS, [r.text for r in responses if r.status_code not in (201, 503)]
    assert len(refused) == REQUESTS - PIS
    assert {e["error"]["code"] for e in refused} == {"no_pi_available"}
    assert len({b["serial"] for b in made}) == PIS
    assert len({b["id"] for b in made}) == PIS
    pis = api.get(f"{server.url}/api/v1/pis").json()
    assert {p["state"] for p in pis} == {"baked"}
    assert {p["bake_id"] for p in pis} == {b["id"] for b in made}
    live = api.get(f"{server.url}/api/v1/bakes").json()
    assert sorted(b["id"] for b in live) == sorted(b["id"] for b in made)
    exports = (server.root.parent / "exports.conf").read_text()
    for b in made:
        assert exports.count(f'/bakes/{b["id"]}/root";') == 2  # Path and Pseudo of one export
