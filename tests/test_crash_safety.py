"""SIGKILL the server mid-bake and mid-upload: after a restart nothing half-made is
listed, exported or left on disk."""

from __future__ import annotations

import http.client
import json

import pytest

from bakery.sim.wait import wait_until
from tests.conftest import install_gated_ppi, upload_raspios


@pytest.fixture
def server(live_server):
    return live_server(workers=2, power_timeout=120)


def on_disk(path) -> list[str]:
    return sorted(p.name for p in path.iterdir()) if path.exists() else []


def test_sigkill_in_the_middle_of_a_bake(server, sd_image_file, tmp_path, ppi_dir):
    gate = tmp_path / "gate"
    ppi = install_gated_ppi(ppi_dir, gate, "poweron")
    api = server.session()
    upload_raspios(server, sd_image_file)
    pi = {
        "serial": "00000001",
        "ip": "127.0.0.11",
        "power_driver": "ppi",
        "power_settings": {"program": ppi},
    }
    assert api.post(f"{server.url}/api/v1/pis", json=pi).status_code == 201

    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    connection.request(
        "POST",
        "/api/v1/bakes",
        body=json.dumps({"bakeform": "raspios"}),
        headers={**api.headers, "Content-Type": "application/json"},
    )
    try:
        wait_until(lambda: (gate / "started").exists(), what="the bake to reach power-on")
        bake_dirs = on_disk(server.root / "bakes")
        assert len(bake_dirs) == 1
        assert bake_dirs[0] in (tmp_path / "exports.conf").read_text()
        server.kill()
    finally:
        (gate / "open").touch()
        connection.close()

    server.start()
    api = server.session()
    assert api.get(f"{server.url}/api/v1/bakes").json() == []
    history = api.get(f"{server.url}/api/v1/bakes?all=true").json()
    assert [b["state"] for b in history] == ["failed"]
    assert "restart" in history[0]["error"]
    assert api.get(f"{server.url}/api/v1/pis/00000001").json()["state"] == "available"
    assert on_disk(server.root / "bakes") == []
    assert bake_dirs[0] not in (tmp_path / "exports.conf").read_text()
    events = api.get(f"{server.url}/api/v1/pis/00000001/events").json()
    assert any(e["message"].startswith("bake rolled back") for e in events)
    assert any(e["kind"] == "power" and e["data"].get("action") == "off" for e in events)


def test_sigkill_in_the_middle_of_an_upload(server, sd_image_file):
    data = sd_image_file.read_bytes()
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    connection.putrequest("PUT", "/api/v1/bakeforms/halfway")
    connection.putheader("Authorization", f"Bearer {server.token}")
    connection.putheader("Content-Type", "application/octet-stream")
    connection.putheader("Content-Length", str(len(data)))
    connection.endheaders()
    connection.send(data[: len(data) // 2])
    forms = server.root / "bakeforms"
    try:
        wait_until(
            lambda: any(n.startswith(".incoming-") for n in on_disk(forms)),
            what="the upload to reach the server's staging dir",
        )
        server.kill()
    finally:
        connection.close()

    server.start()
    api = server.session()
    assert api.get(f"{server.url}/api/v1/bakeforms").json() == []
    assert on_disk(forms) == []
    assert api.get(f"{server.url}/api/v1/bakeforms/halfway").status_code == 404
