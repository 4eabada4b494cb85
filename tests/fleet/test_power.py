"""fleet.power: after a restart, Pis get back the power their state implies."""

from __future__ import annotations

from bakery.models import Bake, Pi, utcnow
from tests.conftest import install_ppi

STATEFUL_PPI = """\
import json, pathlib, sys
request = json.load(sys.stdin)
state_file = pathlib.Path(request["params"]["relay"])
if request["op"] in ("on", "off"):
    state_file.write_text(request["op"])
state = state_file.read_text() if state_file.exists() else "off"
print(json.dumps({"ok": True, "state": state}))
"""


def test_restore_power_brings_pis_back_to_what_their_state_implies(
    fleet, raspios, tmp_path, ppi_dir
):
    ppi = install_ppi(ppi_dir, "relay.py", STATEFUL_PPI)
    relays = {}
    for serial in ("00000001", "00000002"):
        relays[serial] = tmp_path / f"relay-{serial}"
        fleet.register_pi(
            serial,
            ip=f"127.0.0.{int(serial)}",
            power_driver="ppi",
            power_settings={"program": ppi, "params": {"relay": str(relays[serial])}},
        )
    bake = fleet.bake("raspios", serial="00000001")
    assert relays["00000001"].read_text() == "on"
    relays["00000001"].write_text("off")  # the rack lost power while bakery was down
    relays["00000002"].write_text("on")  # and a free Pi came up on its own
    fleet.restore_power()
    assert relays["00000001"].read_text() == "on"
    assert relays["00000002"].read_text() == "off"
    assert Pi.get(Pi.serial == "00000001").power_state == "on"
    assert Bake.get_by_id(bake.id).state == "baked"


def test_a_restore_leaves_alone_the_pis_registered_since_the_start(fleet, tmp_path, ppi_dir):
    ppi = install_ppi(ppi_dir, "relay.py", STATEFUL_PPI)
    relays = {serial: tmp_path / f"relay-{serial}" for serial in ("00000001", "00000002")}

    def register(serial: str) -> None:
        settings = {"program": ppi, "params": {"relay": str(relays[serial])}}
        fleet.register_pi(serial, power_driver="ppi", power_settings=settings)
        relays[serial].write_text("on")

    register("00000001")
    started = utcnow()
    register("00000002")

    fleet.restore_power(registered_before=started)

    assert relays["00000001"].read_text() == "off"
    assert relays["00000002"].read_text() == "on"  # its operator's to switch
