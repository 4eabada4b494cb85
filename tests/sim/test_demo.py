"""The newcomer's demo: ``bakery sim run`` (what ``make run`` starts) on a fresh data
dir, then ``bakery bake``, ``bakery pi show``, ``bakery sim status`` and
``bakery unbake`` from another shell, all within a minute. Loopback mode, so it runs
without root."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bakery.sim.server import free_port, free_udp_port
from bakery.sim.wait import wait_until

BAKERY = str(Path(sys.executable).with_name("bakery"))


@pytest.fixture
def demo(tmp_path):
    """``bakery sim run`` with two Pis on free ports; stopped with SIGTERM after."""
    api_port, power_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAKERY_")}
    env |= {
        "BAKERY_ROOT": str(tmp_path / "data"),
        "BAKERY_URL": f"http://127.0.0.1:{api_port}",
        "BAKERY_SIM_URL": f"http://127.0.0.1:{power_port}",
    }
    output = tmp_path / "demo.out"
    command = [BAKERY, "sim", "run", "--pis", "2", "--mode", "loopback"]
    command += ["--port", str(api_port), "--power-port", str(power_port)]
    command += ["--tftp-bind", f"127.0.0.1:{free_udp_port()}"]
    with open(output, "wb") as out:
        process = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield process, env, output
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(30)


def bakery(env: dict, *args: str) -> dict | list:
    done = subprocess.run(
        [BAKERY, "--json", *args], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


@pytest.mark.slow
def test_a_newcomer_bakes_watches_the_boot_and_unbakes_within_a_minute(demo):
    process, env, output = demo
    started = time.monotonic()
    wait_until(lambda: "Bakery is running" in output.read_text(), 45, what="the demo to start")
    assert "bakery bake demo" in output.read_text()

    bake = bakery(env, "bake", "demo")
    wait_until(
        lambda: any(pi["boot"] == "booted" for pi in bakery(env, "sim", "status")),
        20,
        what="the simulated Pi to boot",
    )
    shown = bakery(env, "pi", "show", bake["serial"], "--events", "50")
    unbaked = bakery(env, "unbake", bake["id"])
    statuses = {pi["serial"]: pi for pi in bakery(env, "sim", "status")}

    assert time.monotonic() - started < 60
    messages = [event["message"] for event in shown["events"]]
    for step in ("root cloned", "root exported", "powered on"):
        assert step in messages
    assert any(message.startswith("first request: ") for message in messages)
    assert any(message.startswith("cmdline.txt ") for message in messages)
    assert any(message.startswith("power on via webhook") for message in messages)
    assert unbaked["state"] == "unbaked"
    assert (statuses[bake["serial"]]["state"], statuses[bake["serial"]]["boot"]) == ("off", "off")
    os.killpg(process.pid, signal.SIGTERM)
    assert process.wait(30) == 0
