"""The simulator's relay-board API, switched by Bakery's own ``webhook`` driver over
real HTTP on loopback."""

from __future__ import annotations

import pytest
import requests

from bakery.power import PowerController, PowerError, PowerTarget
from bakery.sim.image import REQUIRED_TOOLS
from bakery.sim.power_api import PowerApi, power_settings
from bakery.sim.wait import wait_until

pytestmark = pytest.mark.tools(*REQUIRED_TOOLS)


@pytest.fixture
def power_api(make_fleet):
    api = PowerApi(make_fleet("4B", "5")).start()
    try:
        yield api
    finally:
        api.stop()


def target(api: PowerApi, serial: str) -> PowerTarget:
    return PowerTarget(serial, None, "4B", power_settings(api.url, serial))


def test_the_webhook_driver_powers_a_simulated_pi_on_and_off_and_reads_its_state(
    settings, power_api
):
    controller = PowerController(settings)
    pi = next(iter(power_api.simulator.pis.values()))

    assert controller.run("webhook", target(power_api, pi.serial), "on").state == "on"
    assert pi.powered
    assert controller.run("webhook", target(power_api, pi.serial), "status").state == "on"
    assert controller.run("webhook", target(power_api, pi.serial), "off").state == "off"
    assert controller.run("webhook", target(power_api, pi.serial), "status").state == "off"
    assert (pi.powered, pi.state) == (False, "off")


def test_the_status_reads_on_while_a_pi_is_booted_or_failed(settings, power_api):
    controller = PowerController(settings)
    pi = next(iter(power_api.simulator.pis.values()))
    controller.run("webhook", target(power_api, pi.serial), "on")
    wait_until(lambda: pi.state == "booted", 20, what="the Pi to boot")

    assert controller.run("webhook", target(power_api, pi.serial), "status").state == "on"


def test_an_unknown_pi_is_a_fatal_power_error(settings, power_api):
    with pytest.raises(PowerError) as error:
        PowerController(settings).run("webhook", target(power_api, "0badf00d"), "on")

    assert error.value.type == "fatal"


def test_the_api_lists_every_pi_and_tells_one_pis_boot_step_by_step(power_api):
    pi = next(iter(power_api.simulator.pis.values()))
    requests.post(f"{power_api.url}/pis/{pi.serial}/on", timeout=5).raise_for_status()
    wait_until(lambda: pi.state == "booted", 20, what="the Pi to boot")

    listed = requests.get(f"{power_api.url}/pis", timeout=5).json()["pis"]
    timeline = requests.get(f"{power_api.url}/pis/{pi.serial}/timeline", timeout=5).json()

    assert {(p["serial"], p["state"], p["boot"]) for p in listed} == {
        (p.serial, "on" if p is pi else "off", "booted" if p is pi else "off")
        for p in power_api.simulator.pis.values()
    }
    steps = [entry["step"] for entry in timeline["timeline"]]
    assert steps[0] == "power" and steps[-1] == "nfs" and "tftp" in steps


def test_switching_is_post_only(power_api):
    pi = next(iter(power_api.simulator.pis.values()))

    assert requests.get(f"{power_api.url}/pis/{pi.serial}/on", timeout=5).status_code == 404
    assert not pi.powered
