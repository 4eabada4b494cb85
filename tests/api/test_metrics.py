"""/metrics: Prometheus text for a token of the fleet's readers, 401 without one; every
request the app answers counted by its route's rule and its status (never its path), and
what the API does (bakes, imports, power, boot reports) counted as it happens."""

from __future__ import annotations

import pytest

from bakery import auth
from bakery.models import database
from tests.conftest import install_ppi
from tests.support.metrics import Page

from .conftest import assert_error, register

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


def page(client) -> Page:
    answer = client.get("/metrics")
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return Page(answer.get_data(as_text=True))


def requests_of(page: Page, route: str, method: str, status: int) -> float:
    labels = {"route": route, "method": method, "status": str(status)}
    return page.total("bakery_api_requests_total", **labels)


def upload(client, image) -> int:
    with open(image, "rb") as data:
        return client.put(
            "/api/v1/bakeforms/raspios", data=data, content_type="application/octet-stream"
        ).status_code


def test_a_made_up_method_is_counted_as_other_not_as_a_new_series(client):
    """gunicorn takes any method of 3-20 capitals: each would be a series of its own."""
    before = page(client)
    for method in ("FOOBAR1", "ZZZ999"):
        client.open("/api/v1/pis", method=method)
    after = page(client)

    assert (
        requests_of(after, "unmatched", "other", 405)
        - requests_of(before, "unmatched", "other", 405)
        == 2
    )
    assert not {"FOOBAR1", "ZZZ999"} & after.label_values()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_metrics_need_a_token(anonymous):
    answer = anonymous.get("/metrics")
    assert_error(answer, 401, "unauthorized", "bearer token")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_monitoring_users_viewer_token_reads_them_as_prometheus_text(anonymous, app):
    with database.connection_context():
        _, token = auth.create_token("monitoring", role="viewer")

    answer = anonymous.get("/metrics", headers={"Authorization": f"Bearer {token}"})

    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == PROMETHEUS_TEXT
    assert "# TYPE bakery_pis gauge" in answer.get_data(as_text=True)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_requests_are_counted_by_route_method_and_status_never_by_path(client, anonymous):
    before = page(client)
    client.get("/api/v1/pis/0000dead")
    client.get("/api/v1/pis")
    client.get("/api/v1/no/such/route")
    anonymous.get("/api/v1/pis")
    after = page(client)

    def grew(route: str, method: str, status: int) -> float:
        return requests_of(after, route, method, status) - requests_of(
            before, route, method, status
        )

    assert grew("/api/v1/pis/<serial>", "GET", 404) == 1
    assert grew("/api/v1/pis", "GET", 200) == 1
    assert grew("/api/v1/pis", "GET", 401) == 1
    assert grew("unmatched", "GET", 404) == 1
    assert not {"0000dead", "/api/v1/no/such/route"} & after.label_values()
    timed = after.total("bakery_api_request_duration_seconds_count", route="/api/v1/pis")
    assert (
        timed - before.total("bakery_api_request_duration_seconds_count", route="/api/v1/pis") == 2
    )


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_an_import_and_a_bake_are_counted_with_their_durations(client, pis, sd_image, tmp_path):
    garbage = tmp_path / "garbage.img"
    garbage.write_bytes(b"not an image" * 1000)
    before = page(client)
    assert upload(client, garbage) == 422
    assert upload(client, sd_image) == 201
    made = client.post("/api/v1/bakes", json={"bakeform": "raspios"})
    after = page(client)

    def grew(name: str, **labels: str) -> float:
        return after.total(name, **labels) - before.total(name, **labels)

    assert made.status_code == 201
    assert grew("bakery_bakeform_import_duration_seconds_count", outcome="ok") == 1
    assert grew("bakery_bakeform_import_duration_seconds_count", outcome="failed") == 1
    assert grew("bakery_bakes_started_total") == 1
    assert grew("bakery_bake_duration_seconds_count") == 1
    assert grew("bakery_api_requests_total", route="/api/v1/bakes", status="201") == 1
    assert grew("bakery_power_calls_total", driver="manual", action="on") == 1
    assert after.by("bakery_pis", "state")["baked"] == 1


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_failed_bake_is_counted_by_its_step_and_its_power_failure_by_driver(
    client, bakeform, ppi_dir
):
    failing = '#!/bin/sh\necho \'{"ok": false, "error": {"type": "fatal", "message": "no"}}\'\n'
    program = install_ppi(ppi_dir, "ppi", failing, python=False)
    power = {"power_driver": "ppi", "power_settings": {"program": program}}
    register(client, "00000001", ip="127.0.0.11", **power)
    before = page(client)
    assert client.post("/api/v1/bakes", json={"bakeform": "raspios"}).status_code == 503
    after = page(client)

    def grew(name: str, **labels: str) -> float:
        return after.total(name, **labels) - before.total(name, **labels)

    assert grew("bakery_bakes_started_total") == 1
    assert grew("bakery_bakes_failed_total", step="powering_on") == 1
    assert grew("bakery_bake_duration_seconds_count") == 0
    assert grew("bakery_power_calls_total", driver="ppi", action="on") == 1
    assert grew("bakery_power_failures_total", driver="ppi", action="on", error_type="fatal") == 1
    assert after.by("bakery_pis", "state")["available"] == 1


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_first_boot_report_after_a_power_on_is_a_boot_duration(
    client, anonymous, bakeform, pis, settings
):
    made = client.post("/api/v1/bakes", json={"bakeform": "raspios"}).json
    secret = settings.path("bakes", made["id"], "root", settings.bake_secret_path).read_text()
    headers = {"X-Bakery-Bake-Secret": secret}
    before = page(client)
    for _ in range(2):  # the first report, then a heartbeat
        anonymous.post(
            "/api/v1/metadata/boot", environ_base={"REMOTE_ADDR": made["ip"]}, headers=headers
        )
    after = page(client)

    grew = after.total("bakery_boot_duration_seconds_count") - before.total(
        "bakery_boot_duration_seconds_count"
    )
    assert grew == 1
    assert after.by("bakery_boots", "status")["up"] == 1
