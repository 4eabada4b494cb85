"""/api/v1/metadata/boot: a baked Pi's boot report (no token: its bake's secret, from its
own address). The first after a power-on is "userspace up" on the timeline with the
boot's duration; the others keep its last_seen; a boot past its deadline is stalled."""

from __future__ import annotations

from datetime import timedelta

from bakery import models
from bakery.fleet import boots

from .conftest import assert_error


def bake_and_secret(client, settings) -> tuple[dict, dict[str, str]]:
    made = client.post("/api/v1/bakes", json={"bakeform": "raspios"}).json
    secret = settings.path("bakes", made["id"], "root", settings.bake_secret_path).read_text()
    return made, {"X-Bakery-Bake-Secret": secret}


def report(anonymous, address: str, headers: dict[str, str]):
    return anonymous.post(
        "/api/v1/metadata/boot", environ_base={"REMOTE_ADDR": address}, headers=headers
    )


def boot_events(client, serial: str) -> list[dict]:
    events = client.get(f"/api/v1/pis/{serial}/events").json
    return [e for e in events if e["data"].get("step") in ("userspace_up", "stalled")]


def test_the_first_report_after_power_on_is_userspace_up_and_the_next_a_heartbeat(
    client, anonymous, bakeform, pis, settings
):
    made, secret = bake_and_secret(client, settings)
    assert client.get(f"/api/v1/pis/{made['serial']}").json["boot"] == "booting"

    first = report(anonymous, made["ip"], secret)
    seen = client.get(f"/api/v1/pis/{made['serial']}").json["last_seen"]
    again = report(anonymous, made["ip"], secret)

    assert (first.status_code, first.json) == (200, {"bake_id": made["id"], "first": True})
    assert again.json["first"] is False
    [up] = boot_events(client, made["serial"])
    assert up["message"].startswith("userspace up ") and up["message"].endswith(" after power-on")
    assert up["bake_id"] == made["id"] and up["data"]["seconds"] >= 0
    pi = client.get(f"/api/v1/pis/{made['serial']}").json
    assert pi["boot"] == "up" and pi["last_seen"] > seen


def test_a_power_cycle_begins_a_boot_that_reports_again(client, anonymous, bakeform, pis, settings):
    made, secret = bake_and_secret(client, settings)
    report(anonymous, made["ip"], secret)

    client.post(f"/api/v1/bakes/{made['id']}/power", json={"action": "cycle"})
    booting = client.get(f"/api/v1/pis/{made['serial']}").json["boot"]
    second = report(anonymous, made["ip"], secret)

    assert booting == "booting"
    assert second.json["first"] is True
    assert len(boot_events(client, made["serial"])) == 2


def test_a_report_without_the_bakes_secret_or_from_elsewhere_is_not_found(
    client, anonymous, bakeform, pis, settings
):
    made, secret = bake_and_secret(client, settings)

    for address, headers in [
        (made["ip"], {}),
        (made["ip"], {"X-Bakery-Bake-Secret": "guess"}),
        ("127.0.0.99", secret),
        (next(pi["ip"] for pi in pis if pi["serial"] != made["serial"]), secret),
    ]:
        assert_error(report(anonymous, address, headers), 404, "bake_not_found")

    assert boot_events(client, made["serial"]) == []
    assert client.get(f"/api/v1/pis/{made['serial']}").json["last_seen"] is None


def test_a_boot_past_its_deadline_is_stalled_once_until_it_reports(
    client, anonymous, bakeform, pis, settings, app
):
    made, secret = bake_and_secret(client, settings)
    late = models.utcnow() - timedelta(seconds=settings.boot_deadline + 1)
    context = app.extensions["bakery.fleet"].context
    with models.database.connection_context():
        models.Pi.update(powered_on_at=late).where(models.Pi.serial == made["serial"]).execute()
        found = [boots.check_stalled(context), boots.check_stalled(context)]
    shown = client.get(f"/api/v1/pis/{made['serial']}").json["boot"]
    report(anonymous, made["ip"], secret)

    assert found == [1, 0], "one event per boot"
    assert shown == "stalled"
    stalled, up = boot_events(client, made["serial"])
    assert (
        stalled["message"]
        == f"stalled: userspace not up {settings.boot_deadline:.0f} s after power-on"
    )
    assert up["data"]["step"] == "userspace_up"
    assert client.get(f"/api/v1/pis/{made['serial']}").json["boot"] == "up"
