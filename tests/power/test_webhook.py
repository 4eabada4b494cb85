"""The ``webhook`` driver against a relay board served on loopback."""

from __future__ import annotations

import dataclasses
import logging
import socket
from typing import Any

import pytest

from bakery.power import PowerController, PowerError, PowerTarget
from bakery.power.webhook import WebhookDriver
from tests.power.support import SERIAL


def relay_target(base: str, relay: int = 1, **settings: Any) -> PowerTarget:
    urls = {
        "on_url": f"{base}/relay/{relay}/on",
        "off_url": f"{base}/relay/{relay}/off",
        "status_url": f"{base}/relay/{relay}",
    }
    return PowerTarget(SERIAL, None, "4B", urls | settings)


def closed_port() -> int:
    """A loopback port nothing listens on: bound, then released."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_on_off_and_status_switch_the_relay(settings, relay):
    controller = PowerController(settings)
    target = relay_target(relay.url)

    assert controller.run("webhook", target, "on").state == "on"
    assert controller.run("webhook", target, "status").state == "on"
    assert controller.run("webhook", target, "off").state == "off"
    assert controller.run("webhook", target, "status").state == "off"

    assert [(r["method"], r["path"]) for r in relay.requests] == [
        ("POST", "/relay/1/on"),
        ("GET", "/relay/1"),
        ("POST", "/relay/1/off"),
        ("GET", "/relay/1"),
    ]
    assert relay.requests[0]["headers"]["X-Bakery-Serial"] == SERIAL


def test_get_boards_are_switched_with_get(settings, relay):
    PowerController(settings).run("webhook", relay_target(relay.url, method="GET"), "on")

    assert [(r["method"], r["path"]) for r in relay.requests] == [("GET", "/relay/1/on")]


def test_cycle_switches_off_then_on(settings, relay):
    result = PowerController(settings).run("webhook", relay_target(relay.url), "cycle")

    assert result.state == "on"
    assert [r["path"] for r in relay.requests] == ["/relay/1/off", "/relay/1/on"]


def test_status_regexes_read_custom_bodies(settings, relay):
    target = relay_target(relay.url, on_regex=r'"relay": "1", "state": "on"', off_regex="off")

    assert PowerController(settings).run("webhook", target, "status").state == "off"


def test_status_without_status_url_is_unknown(settings, relay):
    target = relay_target(relay.url)
    settings_without_status = {k: v for k, v in target.settings.items() if k != "status_url"}
    target = PowerTarget(SERIAL, None, "4B", settings_without_status)

    assert PowerController(settings).run("webhook", target, "status").state == "unknown"
    assert relay.requests == []


def test_server_errors_are_retried(settings, relay, events):
    relay.failures = 2

    result = PowerController(settings, events, backoff=0.01).run(
        "webhook", relay_target(relay.url), "on"
    )

    assert result.state == "on"
    assert len(relay.requests) == 3
    assert [e["error_type"] for e in events.data] == ["retryable", "retryable", None]


def test_unauthorised_is_an_auth_error_and_not_retried(settings, relay):
    relay.token = "s3cret"

    with pytest.raises(PowerError) as raised:
        PowerController(settings, backoff=0.01).run("webhook", relay_target(relay.url), "on")

    assert raised.value.type == "auth"
    assert len(relay.requests) == 1


def test_unknown_relay_is_fatal(settings, relay):
    with pytest.raises(PowerError) as raised:
        PowerController(settings, backoff=0.01).run("webhook", relay_target(relay.url, 9), "on")

    assert raised.value.type == "fatal"
    assert "HTTP 404" in raised.value.message


def test_unreachable_board_is_a_connection_error_after_every_attempt(settings, events):
    target = relay_target(f"http://127.0.0.1:{closed_port()}")

    with pytest.raises(PowerError) as raised:
        PowerController(settings, events, backoff=0.01).run("webhook", target, "off")

    assert raised.value.type == "connection"
    assert [(e["attempt"], e["error_type"]) for e in events.data] == [
        (1, "connection"),
        (2, "connection"),
        (3, "connection"),
    ]


def test_header_secrets_reach_the_board_but_not_events_or_logs(settings, relay, events, caplog):
    relay.token = "s3cret"
    relay.failures = 1
    target = relay_target(relay.url, headers={"Authorization": "Bearer s3cret"})

    with caplog.at_level(logging.DEBUG):
        PowerController(settings, events, backoff=0.01).run("webhook", target, "on")

    assert relay.states == {"1": "on"}
    assert len(events.recorded) == 2
    assert "s3cret" not in repr(events.recorded)
    assert events.data[0]["settings"]["headers"] == {"Authorization": "***"}
    assert "s3cret" not in caplog.text


def test_validate_settings_normalises_the_method(settings):
    power_settings = {
        "on_url": "https://relay/1/on",
        "off_url": "https://relay/1/off",
        "method": "get",
    }

    assert WebhookDriver.validate_settings(power_settings, settings)["method"] == "GET"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"on_url": "ftp://relay/1/on"}, "on_url"),
        ({"off_url": "http:///no-host"}, "off_url"),
        ({"status_url": "http://relay:99999/"}, "status_url"),
        ({"on_url": "http://relay/1 on"}, "on_url"),
        ({"method": "PUT"}, "method"),
        ({"headers": {"X-Token": 42}}, "headers"),
        ({"on_regex": "(unclosed"}, "on_regex"),
        ({"verify_tls": "no"}, "verify_tls"),
        ({"timeout": 0}, "timeout"),
        ({"on_ulr": "http://relay/1/on"}, "on_ulr"),
    ],
)
def test_validate_settings_names_the_bad_field(settings, changes, field):
    power_settings = {"on_url": "http://relay/1/on", "off_url": "http://relay/1/off"} | changes

    with pytest.raises(ValueError, match=field):
        WebhookDriver.validate_settings(power_settings, settings)


def test_validate_settings_requires_both_switch_urls(settings):
    with pytest.raises(ValueError, match="off_url"):
        WebhookDriver.validate_settings({"on_url": "http://relay/1/on"}, settings)


@pytest.mark.parametrize(
    "url", ["http://169.254.169.254/latest", "http://10.0.0.9/on", "http://relay.evil/on"]
)
def test_urls_must_point_at_the_relay_hosts_the_operator_allows(settings, url):
    """A Pi's power settings must not make Bakery send requests where its registrant likes
    (the cloud's metadata service, the LAN's other hosts)."""
    power_settings = {"on_url": url, "off_url": "http://relay/1/off"}
    with pytest.raises(ValueError, match="not an allowed relay host"):
        WebhookDriver.validate_settings(power_settings, settings)


def test_relay_hosts_may_be_a_network(settings):
    allowed = dataclasses.replace(settings, webhook_hosts=["10.0.0.0/24"])
    power_settings = {"on_url": "http://10.0.0.9/on", "off_url": "http://10.0.0.9/off"}
    assert WebhookDriver.validate_settings(power_settings, allowed)["on_url"].endswith("/on")
    with pytest.raises(ValueError, match="allowed"):
        WebhookDriver.validate_settings(
            power_settings, dataclasses.replace(settings, webhook_hosts=[])
        )


def test_device_key_is_the_relay_board(settings):
    driver = WebhookDriver(settings)

    relay_1 = relay_target("http://admin:pw@Board-7:8080", relay=1)
    relay_2 = relay_target("http://admin:pw@Board-7:8080", relay=2)

    assert driver.device_key(relay_1) == driver.device_key(relay_2) == "webhook:http://board-7:8080"


def test_credentials_in_urls_are_not_recorded(settings, relay, events):
    base = relay.url.replace("http://", "http://admin:pw-9f3e@")
    target = relay_target(base, off_url=f"{relay.url}/relay/1/off?api_key=k-77aa")

    controller = PowerController(settings, events)
    controller.run("webhook", target, "on")
    controller.run("webhook", target, "off")

    assert relay.requests[0]["headers"]["Authorization"].startswith("Basic ")
    assert relay.requests[1]["path"] == "/relay/1/off?api_key=k-77aa"
    recorded = repr(events.recorded)
    assert "pw-9f3e" not in recorded and "k-77aa" not in recorded
    assert events.data[0]["settings"]["on_url"].startswith("http://admin:***@127.0.0.1")
