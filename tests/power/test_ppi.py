"""The ``ppi`` driver against real PPI executables (``ppis/``), through the controller."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path

import pytest

from bakery.power import PowerController, PowerError
from bakery.power.ppi import PpiDriver
from tests.power.support import SERIAL, ppi_target, read_jsonl, wait_until
from tests.support.processes import alive


@pytest.fixture
def v1_config(tmp_path: Path, ppi_dir: Path) -> Path:
    """An original-style PPI config in the PPI directory: the Pis it knows, and where
    our fake logs calls."""
    config = ppi_dir / "ppi-config.json"
    config.write_text(json.dumps({"piList": {SERIAL: {"id": 3}}, "log": str(tmp_path / "v1.log")}))
    return config


def test_original_contract_ppi_powers_on_and_off(settings, v1_config, tmp_path):
    controller = PowerController(settings)
    target = ppi_target("v1_ppi.py", config=v1_config.name)

    assert controller.run("ppi", target, "on").state == "on"
    assert controller.run("ppi", target, "off").state == "off"

    calls = read_jsonl(tmp_path / "v1.log")
    assert [call["request"]["action"] for call in calls] == ["poweron", "poweroff"]
    assert all(call["request"]["piId"] == SERIAL for call in calls)
    assert calls[0]["argv"] == ["-c", str(v1_config)]


def test_stderr_of_a_successful_ppi_is_logged_not_failed(settings, v1_config, caplog):
    config = json.loads(v1_config.read_text()) | {"chatty": True}
    v1_config.write_text(json.dumps(config))
    target = ppi_target("v1_ppi.py", config=v1_config.name)

    with caplog.at_level(logging.INFO, logger="bakery.power"):
        result = PowerController(settings).run("ppi", target, "on")

    assert result.state == "on"
    stderr_logs = [r.getMessage() for r in caplog.records if "stderr" in r.getMessage()]
    assert stderr_logs == [f"PPI stderr for Pi {SERIAL}: switching relay for {SERIAL}"]


def test_status_from_an_original_ppi_is_unknown(settings, v1_config):
    target = ppi_target("v1_ppi.py", config=v1_config.name)

    assert PowerController(settings).run("ppi", target, "status").state == "unknown"


def test_original_ppi_refusing_a_pi_is_a_fatal_error(settings, v1_config):
    target = dataclasses.replace(ppi_target("v1_ppi.py", config=v1_config.name), serial="ffffffff")

    with pytest.raises(PowerError) as raised:
        PowerController(settings).run("ppi", target, "on")

    assert raised.value.type == "fatal"
    assert "unknown pi ffffffff" in raised.value.message


def test_structured_reply_gives_the_state_and_the_v2_request(settings, tmp_path):
    log = tmp_path / "calls.jsonl"
    target = ppi_target("fake_ppi.py", params={"state": "off", "log": str(log)})

    result = PowerController(settings).run("ppi", target, "status")

    assert result.state == "off"
    assert read_jsonl(log)[0]["op"] == "status"


def test_retryable_error_is_retried_until_success(settings, tmp_path, events):
    calls = tmp_path / "calls"
    params = {"calls": str(calls), "fail": {"times": 2, "type": "retryable", "exit": 2}}
    controller = PowerController(settings, events, backoff=0.01)

    result = controller.run("ppi", ppi_target("fake_ppi.py", params=params), "on")

    assert result.state == "on"
    assert calls.read_text().splitlines() == ["on", "on", "on"]
    assert [(e["attempt"], e["outcome"]) for e in events.data] == [
        (1, "error"),
        (2, "error"),
        (3, "ok"),
    ]


def test_fatal_error_is_not_retried(settings, tmp_path):
    calls = tmp_path / "calls"
    params = {
        "calls": str(calls),
        "fail": {"times": 9, "type": "fatal"},
        "message": "relay 3 fused",
    }

    with pytest.raises(PowerError) as raised:
        PowerController(settings, backoff=0.01).run(
            "ppi", ppi_target("fake_ppi.py", params=params), "on"
        )

    assert (raised.value.type, raised.value.message) == ("fatal", "relay 3 fused")
    assert calls.read_text().splitlines() == ["on"]


@pytest.mark.parametrize(
    ("exit_code", "error_type", "attempts"),
    [(2, "retryable", 3), (3, "fatal", 1), (4, "unsupported", 1), (1, "fatal", 1)],
)
def test_exit_code_without_structured_reply_sets_the_error_type(
    settings, tmp_path, exit_code, error_type, attempts
):
    calls = tmp_path / "calls"
    target = ppi_target("fake_ppi.py", params={"calls": str(calls), "exit": exit_code})

    with pytest.raises(PowerError) as raised:
        PowerController(settings, backoff=0.01).run("ppi", target, "off")

    assert raised.value.type == error_type
    assert len(calls.read_text().splitlines()) == attempts


def test_missing_executable_is_a_setting_error(settings, tmp_path):
    target = ppi_target("no-such-ppi")

    with pytest.raises(PowerError) as raised:
        PowerController(settings).run("ppi", target, "on")

    assert raised.value.type == "setting"


def test_timeout_kills_the_ppi_and_its_children(settings, tmp_path):
    pids_file = tmp_path / "pids.json"
    quick = dataclasses.replace(settings, power_timeout=1.0, power_retries=1)
    target = ppi_target("hang_ppi.py", params={"pids": str(pids_file)})

    try:
        with pytest.raises(PowerError) as raised:
            PowerController(quick).run("ppi", target, "on")

        assert raised.value.type == "timeout"
        pids = json.loads(pids_file.read_text())
        assert wait_until(lambda: not any(alive(pid) for pid in pids.values()), timeout=5)
    finally:
        for pid in json.loads(pids_file.read_text()).values() if pids_file.exists() else []:
            if alive(pid):
                os.kill(pid, 9)


def test_validate_settings_accepts_a_program_and_config_of_the_ppi_dir(settings, v1_config):
    power_settings = {"program": "v1_ppi.py", "config": v1_config.name, "id": 3}

    assert PpiDriver.validate_settings(power_settings, settings) == power_settings


@pytest.mark.parametrize(
    ("power_settings", "field"),
    [
        ({}, "program"),
        ({"program": "ppis/v1_ppi.py"}, "program"),
        ({"program": "../ppis/v1_ppi.py"}, "program"),
        ({"program": "/bin/sh"}, "program"),
        ({"program": "no-such-ppi"}, "program"),
        ({"program": "v1_ppi.py", "config": "/etc/ppi.json"}, "config"),
        ({"program": "v1_ppi.py", "args": ["-c", "/bin/sh"]}, "args"),
        ({"path": "/bin/sh"}, "path"),
        ({"program": "v1_ppi.py", "params": ["x"]}, "params"),
        ({"program": "v1_ppi.py", "cofnig": "ppi.json"}, "cofnig"),
    ],
)
def test_validate_settings_names_the_bad_field(settings, power_settings, field):
    """A Pi's settings name a program of the operator's directory, never a path or an
    argument list: the director's token registered a Pi running ``/bin/sh -c ...``."""
    with pytest.raises(ValueError, match=field):
        PpiDriver.validate_settings(power_settings, settings)


def test_without_a_ppi_dir_no_program_can_be_named(settings):
    without = dataclasses.replace(settings, ppi_dir="")
    with pytest.raises(ValueError, match="ppi_dir"):
        PpiDriver.validate_settings({"program": "v1_ppi.py"}, without)


def test_a_ppi_that_forks_a_child_holding_stdout_is_answered_when_it_exits(settings, tmp_path):
    """The finding: a PPI leaving a child with its stdout open turned a valid ``ok`` into a
    timeout, and the child kept running."""
    pids_file = tmp_path / "child.pid"
    quick = dataclasses.replace(settings, power_timeout=20.0, power_retries=1)
    target = ppi_target("forking_ppi.py", params={"pids": str(pids_file)})

    started = time.monotonic()
    result = PowerController(quick).run("ppi", target, "on")

    assert result.state == "on"
    assert time.monotonic() - started < 5  # not the 20 s timeout
    child = int(pids_file.read_text())
    assert wait_until(lambda: not alive(child), timeout=5)


def test_device_key_is_the_config_and_board_id(settings, v1_config):
    driver = PpiDriver(settings)
    board_3 = ppi_target("v1_ppi.py", config=v1_config.name, id=3)
    whole_config = ppi_target("v1_ppi.py", config=v1_config.name)

    assert driver.device_key(board_3) == f"ppi:{v1_config.name}#3"
    assert driver.device_key(whole_config) == f"ppi:{v1_config.name}"
