"""fleet.gauges: the fleet's state as a scrape shows it, read from the database at the
scrape: Pis and live bakes by state, baked Pis by how far their boot got, and the slowest
boot among those up."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bakery.fleet import Pi, PiState
from tests.support.metrics import Page, scrape


def gauges(fleet) -> Page:
    return scrape([fleet.gauges()])


def report_up(fleet, settings, bake, ip: str) -> None:
    """The boot report the bake's root sends once its userspace is up."""
    secret = settings.path("bakes", bake.id, "root", settings.bake_secret_path).read_text()
    fleet.report_userspace(ip, secret)


def powered_on_earlier(serial: str, seconds: float) -> None:
    """Move a Pi's power-on back, as if its boot had begun ``seconds`` earlier."""
    pi = Pi.get(Pi.serial == serial)
    earlier = pi.powered_on_at - timedelta(seconds=seconds)
    Pi.update(powered_on_at=earlier).where(Pi.id == pi.id).execute()


def test_pis_and_live_bakes_are_counted_by_state(fleet, bake_pi):
    bake_pi("00000001", ip="127.0.0.11")
    second = bake_pi("00000002", ip="127.0.0.12")
    bake_pi("00000003", ip="127.0.0.13")
    fleet.unbake(second.id)
    fleet.register_pi("00000004", ip="127.0.0.14")
    fleet.set_pi_state("00000004", PiState.BROKEN, "relay melted")
    fleet.boot_source().boot_target("00000005", "127.0.0.15")  # seen on the wire

    page = gauges(fleet)

    assert page.by("bakery_pis", "state") == {
        "discovered": 1,
        "available": 1,
        "preparing": 0,
        "baked": 2,
        "unbaking": 0,
        "broken": 1,
    }
    assert page.by("bakery_live_bakes", "state") == {"preparing": 0, "baked": 2, "unbaking": 0}


def test_baked_pis_are_counted_by_boot_and_the_slowest_one_up_is_shown(fleet, bake_pi, settings):
    first = bake_pi("00000001", ip="127.0.0.11")
    second = bake_pi("00000002", ip="127.0.0.12")
    bake_pi("00000003", ip="127.0.0.13")
    booting = gauges(fleet)
    powered_on_earlier("00000002", 40)
    report_up(fleet, settings, first, "127.0.0.11")
    report_up(fleet, settings, second, "127.0.0.12")
    powered_on_earlier("00000003", settings.boot_deadline + 1)

    page = gauges(fleet)

    assert booting.by("bakery_boots", "status") == {"booting": 3, "up": 0, "stalled": 0}
    assert "\nbakery_boot_duration_max_seconds " not in booting.text  # none is up yet
    assert page.by("bakery_boots", "status") == {"booting": 0, "up": 2, "stalled": 1}
    slow = Pi.get(Pi.serial == "00000002")
    assert page.total("bakery_boot_duration_max_seconds") == pytest.approx(
        (slow.up_at - slow.powered_on_at).total_seconds(), abs=1e-6
    )
    assert page.total("bakery_boot_duration_max_seconds") >= 40
