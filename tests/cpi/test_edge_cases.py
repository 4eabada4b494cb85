"""The edge cases of the BOSH lifecycle specs (bosh-cpi.md §7) against a live Bakery:
deleting what is gone, failing creations that leave nothing behind, both API versions,
and many CPI processes at once."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

from tests.conftest import install_ppi

from .harness import SETTINGS_FILE, failed, live_bakes, live_disks, ok, register_pis, root_file

AGENT_ID = "agent-edge"
NETWORKS = {"default": {"type": "dynamic", "cloud_properties": {}}}
MISSING_ID = "0123456789abcdef0123456789abcdef"


def create_vm(cpi, stemcell, cloud_properties=None, api_version=2) -> dict:
    return cpi(
        "create_vm",
        AGENT_ID,
        stemcell,
        cloud_properties or {},
        NETWORKS,
        [],
        {},
        api_version=api_version,
    )


def test_deleting_what_is_already_gone(cpi, api, stemcell):
    register_pis(api, 1)
    vm_cid, _ = ok(create_vm(cpi, stemcell))
    disk_cid = ok(cpi("create_disk", 64, {}, None))
    ok(cpi("delete_vm", vm_cid))
    ok(cpi("delete_disk", disk_cid))

    assert failed(cpi("delete_vm", vm_cid), "VMNotFound")["message"] == f"VM '{vm_cid}' not found"
    failed(cpi("delete_vm", "not-a-bake-id"), "VMNotFound")
    failed(cpi("delete_disk", disk_cid), "DiskNotFound")
    assert ok(cpi("detach_disk", vm_cid, disk_cid)) is None
    assert ok(cpi("delete_snapshot", MISSING_ID)) is None
    ok(cpi("delete_stemcell", stemcell))
    assert ok(cpi("delete_stemcell", stemcell)) is None
    assert ok(cpi("has_vm", "../../etc")) is False
    assert ok(cpi("has_disk", MISSING_ID)) is False
    failed(cpi("reboot_vm", vm_cid), "VMNotFound")
    failed(cpi("set_vm_metadata", vm_cid, {"a": "b"}), "VMNotFound")
    failed(cpi("get_disks", vm_cid), "VMNotFound")
    failed(cpi("set_disk_metadata", disk_cid, {"a": "b"}), "DiskNotFound")
    failed(cpi("attach_disk", MISSING_ID, disk_cid), "DiskNotFound")
    live_disk = ok(cpi("create_disk", 64, {}, None))
    failed(cpi("attach_disk", vm_cid, live_disk), "VMNotFound")  # the disk is there, the VM not


def test_persistent_disk_outlives_its_vm(cpi, api, stemcell):
    register_pis(api, 1)
    vm_cid, _ = ok(create_vm(cpi, stemcell))
    disk_cid = ok(cpi("create_disk", 256, {}, None))
    ok(cpi("attach_disk", vm_cid, disk_cid))

    ok(cpi("delete_vm", vm_cid))  # the director may delete a VM with disks attached

    assert ok(cpi("has_disk", disk_cid)) is True
    assert [d["id"] for d in live_disks(api)] == [disk_cid]
    assert api.get(f"{api.base}/disks/{disk_cid}").json()["bake_id"] is None
    failed(cpi("detach_disk", vm_cid, disk_cid), "DiskNotAttached")


def test_create_vm_with_an_unknown_stemcell_fails_for_good_and_leaves_nothing(cpi, api):
    register_pis(api, 1)

    error = failed(create_vm(cpi, "no-such-stemcell"), "VMCreationFailed")

    assert error["ok_to_retry"] is False
    assert "no-such-stemcell" in error["message"]
    assert live_disks(api) == [] and live_bakes(api) == []


def test_create_vm_without_a_free_pi_may_be_retried_and_leaves_nothing(cpi, api, stemcell):
    register_pis(api, 1, labels=["rack-1"])

    error = failed(create_vm(cpi, stemcell, {"labels": ["rack-2"]}), "VMCreationFailed")

    assert error["ok_to_retry"] is True
    assert live_disks(api) == [] and live_bakes(api) == []
    assert api.get(f"{api.base}/pis").json()[0]["state"] == "available"


def test_create_vm_seeds_cloud_init_only_when_the_vm_type_asks(cpi, api, bakery, stemcell):
    register_pis(api, 2)
    seed = "var/lib/cloud/seed/nocloud/user-data"
    user_data = "#cloud-config\nntp: {enabled: true}\n"

    plain, _ = ok(create_vm(cpi, stemcell))
    seeded, _ = ok(create_vm(cpi, stemcell, {"user_data": user_data}))

    assert not root_file(bakery, plain, seed).exists()
    assert root_file(bakery, seeded, seed).read_text() == user_data


def test_create_vm_passes_the_vm_types_boot_protocol(cpi, api, stemcell):
    """The test Bakery runs no HTTP boot server: a vm_type asking for HTTP boot fails
    with Bakery's own words, and leaves nothing behind."""
    register_pis(api, 2)

    over_tftp, _ = ok(create_vm(cpi, stemcell, {"boot_protocol": "tftp"}))
    error = failed(create_vm(cpi, stemcell, {"boot_protocol": "http"}), "VMCreationFailed")

    assert api.get(f"{api.base}/bakes/{over_tftp}").json()["boot_protocol"] == "tftp"
    assert "boot_protocol" in error["message"] and "http_boot_bind" in error["message"]
    assert len(live_bakes(api)) == 1


def test_create_vm_places_by_serial_and_sizes_the_ephemeral_disk(cpi, api, bakery, stemcell):
    pis = register_pis(api, 3)
    wanted = pis[1]["serial"]

    vm_cid, _ = ok(create_vm(cpi, stemcell, {"serial": wanted, "ephemeral_disk_mib": 0}))

    bake = api.get(f"{api.base}/bakes/{vm_cid}").json()
    assert bake["serial"] == wanted
    assert bake["disks"] == [] and live_disks(api) == []
    disks = json.loads(root_file(bakery, vm_cid, SETTINGS_FILE).read_text())["disks"]
    assert "ephemeral" not in disks


def test_api_version_1_answers_the_v1_shapes(cpi, api, stemcell):
    register_pis(api, 1)

    vm_cid = ok(create_vm(cpi, stemcell, api_version=1))
    disk_cid = ok(cpi("create_disk", 64, {}, vm_cid, api_version=1))

    assert isinstance(vm_cid, str) and ok(cpi("has_vm", vm_cid, api_version=1)) is True
    assert ok(cpi("attach_disk", vm_cid, disk_cid, api_version=1)) is None
    assert ok(cpi("get_disks", vm_cid, api_version=1)) == [disk_cid]


def test_create_stemcell_takes_the_api_3_env_argument_and_replaces_a_reupload(
    cpi, api, sd_image_file
):
    properties = {"name": "bosh-pi/arm64 ubuntu", "version": "1.0"}
    tags = {"tags": {"team": "pis"}}

    first = ok(cpi("create_stemcell", str(sd_image_file), properties, tags, api_version=3))
    again = ok(cpi("create_stemcell", str(sd_image_file), properties))

    assert first == again == "bosh-pi-arm64-ubuntu-1.0"
    assert [b["name"] for b in api.get(f"{api.base}/bakeforms").json()] == [first]
    failed(cpi("create_stemcell", "/no/such/image", properties), "CloudError")


def test_ten_parallel_create_vms_on_six_pis(cpi, api, stemcell):
    pis = register_pis(api, 6)

    with ThreadPoolExecutor(10) as pool:
        responses = list(pool.map(lambda _: create_vm(cpi, stemcell), range(10)))

    made = [ok(r)[0] for r in responses if r["error"] is None]
    refused = [r["error"] for r in responses if r["error"] is not None]
    assert len(made) == 6 and len(refused) == 4
    assert all(e["type"] == "Bosh::Clouds::VMCreationFailed" and e["ok_to_retry"] for e in refused)
    bakes = [api.get(f"{api.base}/bakes/{cid}").json() for cid in made]
    assert {b["serial"] for b in bakes} == {p["serial"] for p in pis}
    disks = live_disks(api)
    assert sorted(d["bake_id"] for d in disks) == sorted(made)  # one ephemeral each, no orphans


def test_a_failure_after_the_bake_rolls_everything_back(cpi, api, stemcell, ppi_dir):
    relay = install_ppi(ppi_dir, "dead-relay", "#!/bin/sh\nexit 1\n", python=False)
    dead_relay = {"power_driver": "ppi", "power_settings": {"program": relay}}
    pi = register_pis(api, 1, **dead_relay)[0]

    error = failed(create_vm(cpi, stemcell), "VMCreationFailed")

    assert "power" in error["message"]
    assert error["ok_to_retry"] is True  # the next attempt gets another Pi
    assert live_disks(api) == [] and live_bakes(api) == []
    # The Pi that could not be switched off is kept out of the fridge for the operator.
    assert api.get(f"{api.base}/pis/{pi['serial']}").json()["state"] == "broken"
