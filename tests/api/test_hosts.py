"""/api/v1/hosts and a Pi's host: what `bakery host list` and `bakery pi` show."""

from __future__ import annotations

import dataclasses

from bakery.fleet import Fleet

from .conftest import assert_error, register


def test_hosts_are_listed_with_their_liveness_pis_and_space(client, app, settings):
    fleet = app.extensions["bakery.fleet"]
    fleet.join_host()
    Fleet(dataclasses.replace(settings, host_id="rack-2")).join_host()
    register(client, "00000001")
    register(client, "00000002", host="rack-2")

    hosts = {host["name"]: host for host in client.get("/api/v1/hosts").json}

    assert sorted(hosts) == sorted([settings.host_id, "rack-2"])
    assert hosts["rack-2"]["live"] is True and hosts["rack-2"]["pis"] == 1
    assert hosts[settings.host_id]["data_dir"] == str(settings.root)
    assert hosts[settings.host_id]["data_free_bytes"] > 0


def test_a_pi_shows_its_host_and_moves_only_to_one_that_exists(client, app, settings):
    app.extensions["bakery.fleet"].join_host()
    assert register(client, "00000001")["host"] == settings.host_id

    unknown = client.patch("/api/v1/pis/00000001", json={"host": "rack-9"})
    refused = client.post("/api/v1/pis", json={"serial": "00000002", "host": "rack-9"})

    assert_error(unknown, 422, "validation_error", "host", "rack-9")
    assert_error(refused, 422, "validation_error", "host", "rack-9")
    assert client.get("/api/v1/pis/00000001").json["host"] == settings.host_id
    assert client.get("/api/v1/pis/00000002").status_code == 404


def test_the_pis_of_a_host_that_stopped_beating_show_it(client, app, settings):
    from datetime import timedelta

    from bakery.models import Host, utcnow

    app.extensions["bakery.fleet"].join_host()
    Fleet(dataclasses.replace(settings, host_id="rack-2")).join_host()
    register(client, "00000001")
    register(client, "00000002", host="rack-2")
    Host.update(heartbeat_at=utcnow() - timedelta(minutes=5)).where(Host.name == "rack-2").execute()

    down = {pi["serial"]: pi["host_down"] for pi in client.get("/api/v1/pis").json}

    assert down == {"00000001": False, "00000002": True}
