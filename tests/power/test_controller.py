"""Controller policy: per-device serialisation and power-on spacing across processes,
retries with backoff, and the audit events."""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bakery.power import PowerController, PowerError, PowerTarget
from tests.power.support import ppi_target, read_jsonl
from tests.support.metrics import growth, scrape

CLIENT = Path(__file__).parent / "power_client.py"


def run_in_processes(
    settings, targets: list[PowerTarget], action: str = "on", gap: float = 0.0
) -> list[str]:
    """Run one power action per target, each in its own process, all at once."""
    procs = []
    try:
        for target in targets:
            spec = {
                "root": str(settings.root),
                "ppi_dir": settings.ppi_dir,
                "gap": gap,
                "driver": "ppi",
                "action": action,
                "target": dataclasses.asdict(target),
            }
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(CLIENT), json.dumps(spec)],
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        outputs = [proc.communicate(timeout=60)[0].strip() for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    assert [proc.returncode for proc in procs] == [0] * len(procs)
    return outputs


def fake_targets(count: int, log: Path, **params: Any) -> list[PowerTarget]:
    return [
        ppi_target("fake_ppi.py", serial=f"0000000{n}", params={"log": str(log)} | params)
        for n in range(count)
    ]


def test_calls_to_one_device_never_overlap_across_processes(settings, tmp_path):
    log = tmp_path / "calls.jsonl"

    outputs = run_in_processes(settings, fake_targets(3, log, hold=0.3))

    assert outputs == ["on"] * 3
    calls = sorted(read_jsonl(log), key=lambda call: call["start"])
    assert len(calls) == 3
    for earlier, later in zip(calls, calls[1:], strict=False):
        assert later["start"] >= earlier["end"]


def test_calls_to_different_devices_run_at_the_same_time(settings, tmp_path):
    """Each PPI waits until the other has started: that only succeeds if they overlap."""
    log = tmp_path / "calls.jsonl"
    a, b = tmp_path / "a-started", tmp_path / "b-started"
    targets = [
        ppi_target(
            "fake_ppi.py", id="board-a", params={"log": str(log), "touch": str(a), "await": str(b)}
        ),
        ppi_target(
            "fake_ppi.py", id="board-b", params={"log": str(log), "touch": str(b), "await": str(a)}
        ),
    ]

    run_in_processes(settings, targets, action="off")

    first, second = sorted(read_jsonl(log), key=lambda call: call["start"])
    assert second["start"] < first["end"]


def test_power_ons_are_spaced_by_the_gap_fleet_wide(settings, tmp_path):
    log = tmp_path / "calls.jsonl"
    gap = 0.4
    targets = [
        dataclasses.replace(target, settings=target.settings | {"id": f"board-{n}"})
        for n, target in enumerate(fake_targets(4, log))
    ]

    run_in_processes(settings, targets, gap=gap)

    starts = sorted(call["start"] for call in read_jsonl(log))
    assert len(starts) == 4
    assert all(later - earlier >= gap for earlier, later in zip(starts, starts[1:], strict=False))


def test_only_real_power_ons_wait_for_the_gap(settings, tmp_path):
    controller = PowerController(dataclasses.replace(settings, power_on_gap=30.0))
    target = ppi_target("fake_ppi.py", params={})
    manual = PowerTarget("0000000a", None, "3B", {})

    began = time.monotonic()
    controller.run("ppi", target, "on")
    controller.run("ppi", target, "off")
    controller.run("ppi", target, "status")
    controller.run("manual", manual, "on")
    controller.run("manual", manual, "cycle")

    assert time.monotonic() - began < 10


def test_backoff_doubles_up_to_the_cap(settings):
    controller = PowerController(settings, backoff=1.0, backoff_cap=5.0)

    assert [controller.backoff_delay(n) for n in range(1, 6)] == [1, 2, 4, 5, 5]


def test_retries_wait_the_backoff_between_attempts(settings, tmp_path):
    params = {"calls": str(tmp_path / "calls"), "fail": {"times": 2, "type": "connection"}}
    controller = PowerController(settings, backoff=0.2)

    began = time.monotonic()
    controller.run("ppi", ppi_target("fake_ppi.py", params=params), "on")

    assert time.monotonic() - began >= 0.2 + 0.4


def test_every_attempt_is_recorded_with_its_outcome(settings, tmp_path, events):
    params = {"calls": str(tmp_path / "calls"), "fail": {"times": 1, "type": "timeout"}}
    target = ppi_target("fake_ppi.py", params=params)

    PowerController(settings, events, backoff=0.01).run("ppi", target, "cycle")

    assert [serial for serial, _, _ in events.recorded] == [target.serial] * 2
    failed, succeeded = events.data
    assert failed["action"] == succeeded["action"] == "cycle"
    assert failed["driver"] == "ppi"
    assert (failed["outcome"], failed["error_type"], failed["attempt"]) == ("error", "timeout", 1)
    assert (succeeded["outcome"], succeeded["state"], succeeded["attempt"]) == ("ok", "on", 2)
    assert succeeded["attempts"] == settings.power_retries
    assert succeeded["duration_s"] >= 0
    assert "attempt 1/3" in events.recorded[0][1]


def test_every_attempt_is_counted_by_driver_and_action_and_each_failure_by_type(settings, tmp_path):
    params = {"calls": str(tmp_path / "calls"), "fail": {"times": 2, "type": "timeout"}}
    before = scrape()

    PowerController(settings, backoff=0.01).run(
        "ppi", ppi_target("fake_ppi.py", params=params), "off"
    )

    after = scrape()
    assert growth(before, after, "bakery_power_calls_total", "action") == {"off": 3}
    assert growth(before, after, "bakery_power_calls_total", "driver") == {"ppi": 3}
    assert growth(before, after, "bakery_power_failures_total", "error_type") == {"timeout": 2}


def test_secrets_are_never_recorded(settings, tmp_path, events, caplog):
    secret = "tok-8c1f2a"
    params = {
        "api_token": secret,
        "password": "hunter2-pw",
        "message": f"login with {secret} refused",
        "fail": {"times": 9, "type": "auth"},
    }
    target = ppi_target("fake_ppi.py", params=params)

    with caplog.at_level(logging.INFO), pytest.raises(PowerError):
        PowerController(settings, events).run("ppi", target, "on")

    recorded = repr(events.recorded)
    assert secret not in recorded and "hunter2-pw" not in recorded
    assert "login with *** refused" in events.recorded[0][1]
    assert events.data[0]["settings"]["params"]["api_token"] == "***"
    assert f"PPI stderr for Pi {target.serial}: login with *** refused" in caplog.text
    assert secret not in caplog.text


def test_a_crashing_driver_becomes_a_recorded_fatal_error(settings, events):
    target = PowerTarget("1a2b3c4d", None, "4B", {"config": "/etc/ppi.json"})  # no path

    with pytest.raises(PowerError) as raised:
        PowerController(settings, events).run("ppi", target, "on")

    assert raised.value.type == "fatal"
    assert events.data[0]["error_type"] == "fatal"


def test_unknown_driver_or_action_is_refused(settings):
    controller = PowerController(settings)
    target = PowerTarget("1a2b3c4d", None, "4B", {})

    with pytest.raises(ValueError, match="unknown power driver"):
        controller.run("ipmi", target, "on")
    with pytest.raises(ValueError, match="unknown power action"):
        controller.run("manual", target, "reboot")  # type: ignore[arg-type]
