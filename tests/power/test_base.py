"""The driver registry and the error vocabulary the fleet and API rely on."""

from __future__ import annotations

import pytest

from bakery.power import DRIVERS, PowerError, driver_class


def test_shipped_drivers_are_registered_by_name():
    assert sorted(DRIVERS) == ["manual", "ppi", "webhook"]
    assert all(driver_class(name).name == name for name in DRIVERS)


def test_unknown_driver_name_is_a_value_error_listing_the_known_ones():
    with pytest.raises(ValueError, match="manual, ppi, webhook"):
        driver_class("ipmi")


@pytest.mark.parametrize(
    ("error_type", "retryable"),
    [
        ("retryable", True),
        ("connection", True),
        ("timeout", True),
        ("fatal", False),
        ("auth", False),
        ("setting", False),
        ("unsupported", False),
    ],
)
def test_only_transient_errors_are_retryable(error_type, retryable):
    error = PowerError(error_type, "relay board said no")

    assert error.retryable is retryable
    assert (error.type, error.message) == (error_type, "relay board said no")


def test_error_types_outside_the_vocabulary_are_refused():
    with pytest.raises(ValueError):
        PowerError("oops", "not a type")
