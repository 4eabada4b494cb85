"""Secrets go in and never come out: a fleet with known secrets in its power settings,
agent settings and tokens, every answer of the API read, every event and log line
kept, and none of the secrets anywhere."""

from __future__ import annotations

import json
import logging

from .conftest import register

RELAY_PASSWORD = "relay-pw-7f3a91"
RELAY_TOKEN = "relay-bearer-c0ffee"
MBUS_PASSWORD = "mbus-pw-51d2e8"
AGENT_PASSWORD = "agent-env-pw-9a8b7c"
BLOBSTORE_SECRET = "blob-secret-4e5f6a"
SECRETS = [RELAY_PASSWORD, RELAY_TOKEN, MBUS_PASSWORD, AGENT_PASSWORD, BLOBSTORE_SECRET]


def test_no_answer_event_or_log_line_shows_a_secret(client, bakeform, caplog):
    caplog.set_level(logging.DEBUG)
    relay = "http://127.0.0.1:9"  # nothing listens: power calls fail, and are recorded
    register(
        client,
        "00000001",
        ip="127.0.0.11",
        power_driver="webhook",
        power_settings={
            "on_url": f"http://admin:{RELAY_PASSWORD}@127.0.0.1:9/relay/1/on",
            "off_url": f"{relay}/relay/1/off?token={RELAY_TOKEN}",
            "headers": {"Authorization": f"Bearer {RELAY_TOKEN}"},
            "timeout": 1,
        },
    )
    register(client, "00000002", ip="127.0.0.12")
    agent_settings = {
        "agent_id": "agent-1",
        "mbus": f"nats://nats:{MBUS_PASSWORD}@10.0.0.6:4222",
        "env": {"bosh": {"password": AGENT_PASSWORD}},
        "blobstore": {"provider": "dav", "options": {"password": BLOBSTORE_SECRET}},
        "disks": {"system": "/dev/nfs", "persistent": {}},
    }
    failed = client.post("/api/v1/bakes", json={"bakeform": "raspios", "serial": "00000001"})
    assert failed.status_code == 503  # the relay did not answer: rolled back
    made = client.post(
        "/api/v1/bakes",
        json={"bakeform": "raspios", "serial": "00000002", "agent_settings": agent_settings},
    ).json
    client.post("/api/v1/pis/00000001/power", json={"action": "status"})
    token = client.post("/api/v1/tokens", json={"name": "director", "role": "cpi"}).json
    disk = client.post("/api/v1/disks", json={"size_mib": 4, "bake_id": made["id"]}).json

    answers = [
        failed.get_data(as_text=True),
        json.dumps(made),
        json.dumps(disk),
        *(
            client.get(url).get_data(as_text=True)
            for url in (
                "/api/v1/pis",
                "/api/v1/pis/00000001",
                "/api/v1/pis/00000001/events?limit=10000",
                "/api/v1/pis/00000002/events?limit=10000",
                "/api/v1/bakes?all=true",
                f"/api/v1/bakes/{made['id']}",
                f"/api/v1/bakes/{made['id']}/agent-settings",
                "/api/v1/disks",
                "/api/v1/tokens",
            )
        ),
    ]
    everything = "\n".join([*answers, caplog.text])
    assert "agent-1" in everything and "00000001" in everything  # the scan sees the data
    for secret in SECRETS:
        assert secret not in everything, secret
    assert token["token"] not in "\n".join(answers[:-1]) + client.get("/api/v1/tokens").get_data(
        as_text=True
    )
