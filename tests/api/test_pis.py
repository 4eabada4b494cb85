"""/api/v1/pis: register, list, show, update, delete, power, events."""

from __future__ import annotations

import pytest

from tests.conftest import install_ppi

from .conftest import assert_error, register


def test_register_and_show_a_pi(client):
    pi = register(
        client, "1234ABCD", mac="DC-A6-32-01-02-03", model="4B", labels=["rack1"], ip="127.0.0.5"
    )
    assert pi["serial"] == "1234abcd"
    assert pi["mac"] == "dc:a6:32:01:02:03"
    assert pi["state"] == "available"
    assert pi["power_driver"] == "manual"
    shown = client.get("/api/v1/pis/1234abcd").json
    assert shown["labels"] == ["rack1"] and shown["ip"] == "127.0.0.5"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"serial": "xyz"}, "serial"),
        ({"serial": "123456789"}, "serial"),
        ({"serial": "1234abcd;rm"}, "serial"),
        ({}, "serial"),
        ({"serial": "1234abcd", "mac": "nope"}, "mac"),
        ({"serial": "1234abcd", "ip": "*"}, "ip"),
        ({"serial": "1234abcd", "ip": "10.0.0.0/8"}, "ip"),
        ({"serial": "1234abcd", "model": "Pi 9"}, "model"),
        ({"serial": "1234abcd", "labels": ["bad label"]}, "labels"),
        ({"serial": "1234abcd", "unknown": 1}, "unknown"),
    ],
)
def test_register_rejects_bad_input_naming_the_field(client, body, field):
    error = assert_error(client.post("/api/v1/pis", json=body), 422, "validation_error", field)
    assert field in error["details"]["json"]
    assert client.get("/api/v1/pis").json == []


def test_register_twice_is_a_conflict(client):
    register(client, "00000001")
    assert_error(client.post("/api/v1/pis", json={"serial": "1"}), 409, "conflict", "00000001")


def test_two_pis_cannot_share_a_mac(client):
    register(client, "00000001", mac="dc:a6:32:00:00:01")
    response = client.post("/api/v1/pis", json={"serial": "2", "mac": "dc:a6:32:00:00:01"})
    assert_error(response, 409, "conflict", "MAC")


def test_unknown_power_driver_and_bad_settings_are_refused(client):
    assert_error(
        client.post("/api/v1/pis", json={"serial": "1", "power_driver": "laser"}),
        422,
        "validation_error",
        "power",
    )
    body = {"serial": "1", "power_driver": "webhook", "power_settings": {"on_url": "ftp://x"}}
    assert_error(client.post("/api/v1/pis", json=body), 422, "validation_error", "power")


def test_power_secrets_are_not_shown(client, tmp_path):
    body = {
        "serial": "1",
        "power_driver": "webhook",
        "power_settings": {
            "on_url": "http://127.0.0.1:9/on",
            "off_url": "http://127.0.0.1:9/off",
            "headers": {"Authorization": "Bearer hush"},
        },
    }
    pi = register(client, **body)
    assert "hush" not in str(pi)
    assert "hush" not in client.get("/api/v1/pis/00000001").get_data(as_text=True)


def test_list_filters_by_state_and_label(client):
    register(client, "00000001", labels=["a"])
    register(client, "00000002", labels=["a", "b"])
    register(client, "00000003")
    client.patch("/api/v1/pis/00000003", json={"state": "broken", "reason": "smoke"})
    assert [p["serial"] for p in client.get("/api/v1/pis?state=available").json] == [
        "00000001",
        "00000002",
    ]
    assert [p["serial"] for p in client.get("/api/v1/pis?label=b").json] == ["00000002"]
    assert [p["serial"] for p in client.get("/api/v1/pis?state=broken").json] == ["00000003"]
    assert_error(client.get("/api/v1/pis?state=sleeping"), 422, "validation_error", "state")


def test_update_changes_description_and_state(client):
    register(client, "00000001")
    pi = client.patch(
        "/api/v1/pis/00000001", json={"labels": ["x"], "model": "5", "ip": "127.0.0.9"}
    ).json
    assert (pi["labels"], pi["model"], pi["ip"]) == (["x"], "5", "127.0.0.9")
    broken = client.patch(
        "/api/v1/pis/00000001", json={"state": "broken", "reason": "no link"}
    ).json
    assert broken["state"] == "broken" and broken["broken_reason"] == "no link"
    repaired = client.patch("/api/v1/pis/00000001", json={"state": "available"}).json
    assert repaired["state"] == "available" and repaired["broken_reason"] == ""


def test_update_rejects_bad_values_and_unknown_pis(client):
    register(client, "00000001")
    assert_error(
        client.patch("/api/v1/pis/00000001", json={"state": "baked"}),
        422,
        "validation_error",
        "state",
    )
    assert_error(
        client.patch("/api/v1/pis/00000001", json={"mac": "zz"}), 422, "validation_error", "mac"
    )
    assert_error(client.patch("/api/v1/pis/00000009", json={"model": "4B"}), 404, "pi_not_found")
    assert_error(client.patch("/api/v1/pis/not-a-serial", json={}), 404, "pi_not_found")


def test_available_pi_cannot_be_made_available_again(client):
    register(client, "00000001")
    assert_error(
        client.patch("/api/v1/pis/00000001", json={"state": "available"}), 409, "invalid_state"
    )


def test_delete_a_pi(client):
    register(client, "00000001")
    assert client.delete("/api/v1/pis/00000001").status_code == 204
    assert_error(client.get("/api/v1/pis/00000001"), 404, "pi_not_found")
    assert_error(client.delete("/api/v1/pis/00000001"), 404, "pi_not_found")


def test_power_action_on_a_manual_pi_is_recorded(client):
    register(client, "00000001")
    result = client.post("/api/v1/pis/00000001/power", json={"action": "on"}).json
    assert result["action"] == "on" and result["state"] == "unknown"
    events = client.get("/api/v1/pis/00000001/events").json
    assert [e["kind"] for e in events] == ["state", "power"]
    assert_error(
        client.post("/api/v1/pis/00000001/power", json={"action": "explode"}),
        422,
        "validation_error",
        "action",
    )
    assert_error(
        client.post("/api/v1/pis/00000002/power", json={"action": "on"}), 404, "pi_not_found"
    )


def test_power_failure_is_a_503_with_the_reason(client, ppi_dir):
    script = (
        '#!/bin/sh\necho \'{"ok": false, "error": {"type": "fatal", '
        '"message": "relay 3 stuck"}}\'\n'
    )
    ppi = install_ppi(ppi_dir, "failing-ppi", script, python=False)
    register(client, "00000001", power_driver="ppi", power_settings={"program": ppi})
    error = assert_error(
        client.post("/api/v1/pis/00000001/power", json={"action": "on"}),
        503,
        "power_failed",
        "relay 3 stuck",
    )
    assert error


def test_events_limit_is_validated(client):
    register(client, "00000001")
    assert_error(
        client.get("/api/v1/pis/00000001/events?limit=0"), 422, "validation_error", "limit"
    )
    assert len(client.get("/api/v1/pis/00000001/events?limit=1").json) == 1


def test_the_timeline_can_be_followed_and_says_times_since_power_on(client, bakeform, pis):
    serial = pis[0]["serial"]
    before = client.get(f"/api/v1/pis/{serial}/events").json
    client.post("/api/v1/bakes", json={"bakeform": "raspios", "serial": serial})

    new = client.get(f"/api/v1/pis/{serial}/events", query_string={"after": before[-1]["id"]}).json

    assert new and all(event["id"] > before[-1]["id"] for event in new)
    assert before[-1]["since_power_on"] is None, "never powered on yet"
    powered = next(i for i, e in enumerate(new) if e["kind"] == "power")
    assert new[powered]["since_power_on"] == 0
    assert all(event["since_power_on"] >= 0 for event in new[powered:])
    for bad in (-1, "x"):
        response = client.get(f"/api/v1/pis/{serial}/events", query_string={"after": bad})
        assert_error(response, 422, "validation_error", "after")


def test_the_console_of_a_pi_is_read_with_a_checked_limit(client, pis):
    serial = pis[0]["serial"]
    assert client.get(f"/api/v1/pis/{serial}/console").json == []
    for bad in (0, 5000, "x"):
        response = client.get(f"/api/v1/pis/{serial}/console", query_string={"limit": bad})
        assert_error(response, 422, "validation_error", "limit")
    assert_error(client.get("/api/v1/pis/0badf00d/console"), 404, "pi_not_found")
