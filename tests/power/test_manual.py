"""The ``manual`` driver: bakery asks an operator and never claims to know the state."""

from __future__ import annotations

import pytest

from bakery.power import PowerController, PowerTarget
from bakery.power.manual import ManualDriver

TARGET = PowerTarget("1a2b3c4d", None, "3B", {"note": "strip 2, socket 5"})


def test_power_on_asks_the_operator_and_reports_unknown(settings, events):
    result = PowerController(settings, events).run("manual", TARGET, "on")

    assert result.state == "unknown"
    assert "switch Pi 1a2b3c4d on by hand (strip 2, socket 5)" in result.message
    assert events.data[0]["outcome"] == "ok"


def test_status_is_unknown_and_not_queryable(settings):
    assert PowerController(settings).run("manual", TARGET, "status").state == "unknown"
    assert ManualDriver.queryable is False


@pytest.mark.parametrize(
    ("power_settings", "field"), [({"socket": 5}, "socket"), ({"note": 5}, "note")]
)
def test_validate_settings_names_the_bad_field(settings, power_settings, field):
    with pytest.raises(ValueError, match=field):
        ManualDriver.validate_settings(power_settings, settings)
