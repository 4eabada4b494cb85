"""fleet.pis: Pis as operators describe them; one address belongs to one Pi."""

from __future__ import annotations

from bakery.models import Pi


def test_an_address_belongs_to_one_pi(fleet):
    fleet.register_pi("00000001", ip="127.0.0.11")
    fleet.register_pi("00000002", ip="127.0.0.11")
    assert Pi.get(Pi.serial == "00000001").last_ip is None
    fleet.update_pi("00000001", ip="127.0.0.11")
    assert Pi.get(Pi.serial == "00000002").last_ip is None
