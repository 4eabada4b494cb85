"""fleet.queries and the export plan: lists cost the same few queries whatever their length
(the API listed bakes and the fleet published exports with a query per bake before)."""

from __future__ import annotations

import pytest


@pytest.fixture
def five_bakes(fleet, raspios) -> list:
    made = []
    for number in range(1, 6):
        serial = f"0000000{number}"
        fleet.register_pi(serial, ip=f"127.0.0.{10 + number}")
        made.append(fleet.bake("raspios", serial=serial))
        fleet.create_disk(4, bake_id=made[-1].id)
    return made


def test_listing_bakes_with_their_pis_and_disks_is_two_queries(fleet, five_bakes, count_queries):
    with count_queries() as sql:
        listed = fleet.list_bakes()
        shown = [(b.pi.serial, b.pi.last_ip, sorted(d.id for d in b.disks)) for b in listed]
    assert len(sql) == 2, sql
    assert [serial for serial, _, _ in shown] == [b.pi.serial for b in five_bakes]
    assert all(len(disks) == 1 for _, _, disks in shown)


def test_the_export_plan_is_two_queries_whatever_the_number_of_bakes(
    fleet, five_bakes, count_queries
):
    with count_queries() as sql:
        planned = fleet.desired_exports()
    assert len(sql) == 2, sql
    assert sorted(e.kind for e in planned) == ["disk"] * 5 + ["root"] * 5
    assert {e.client for e in planned} == {f"127.0.0.{10 + n}" for n in range(1, 6)}
