"""The metric names and labels follow Prometheus' conventions: ``bakery_`` first, base
units, ``_total`` on counters and only on them, a unit on every histogram, and labels
that take a handful of values (never a serial, an address, a file name or an id)."""

from __future__ import annotations

import re

import pytest

from bakery.metrics import DECLARED

NAME_RE = re.compile(r"bakery_[a-z][a-z0-9]*(_[a-z0-9]+)*")
#: Base units only (Prometheus: seconds, not milliseconds; bytes, not kibibytes).
BASE_UNITS = ("_seconds", "_bytes")
NOT_BASE_UNITS = ("_ms", "_milliseconds", "_minutes", "_hours", "_kb", "_kib", "_mb", "_mib")
#: Labels whose values are one per Pi, bake, request or file: a series for each.
UNBOUNDED_LABELS = {"serial", "bake", "bake_id", "pi", "ip", "address", "mac", "path",
                    "file", "filename", "name", "id", "token", "url", "user"}  # fmt: skip

FAMILIES = pytest.mark.parametrize("family", DECLARED, ids=[f.name for f in DECLARED])


def test_every_name_is_declared_once():
    names = [family.family_name for family in DECLARED]
    assert len(names) == len(set(names))


@FAMILIES
def test_a_name_is_bakery_snake_case_in_base_units(family):
    assert NAME_RE.fullmatch(family.name), family.name
    assert not any(unit in family.name for unit in NOT_BASE_UNITS), family.name


@FAMILIES
def test_counters_and_only_counters_end_in_total(family):
    assert family.name.endswith("_total") == (family.kind == "counter"), family.name


@FAMILIES
def test_a_histogram_says_its_unit_last(family):
    if family.kind == "histogram":
        assert family.name.endswith(BASE_UNITS), family.name
    if family.kind == "counter" and "bytes" in family.name:
        assert family.name.endswith("_bytes_total"), family.name


@FAMILIES
def test_labels_take_few_values_and_are_snake_case(family):
    for label in family.labels:
        assert re.fullmatch(r"[a-z][a-z_]*", label) and label != "le", (family.name, label)
        assert label not in UNBOUNDED_LABELS, (family.name, label)


@FAMILIES
def test_every_family_says_what_it_counts(family):
    assert family.documentation.endswith(".") and len(family.documentation) > 15


def test_the_checks_catch_a_bad_name():
    """The conventions themselves: a counter without _total, a histogram in milliseconds
    and a serial label are each refused above."""
    assert not "bakery_boots_ms".endswith(BASE_UNITS)
    assert any(unit in "bakery_boot_duration_ms" for unit in NOT_BASE_UNITS)
    assert "serial" in UNBOUNDED_LABELS
    assert not NAME_RE.fullmatch("BakeryTftp")
