"""bakery_cpi.cloud in-process: ``Cloud`` against a fake Bakery that keeps bakes, disks and
agent settings in memory and answers as the API does (codes, statuses). Each CPI method's
translation and every rollback path is checked here in milliseconds; the subprocess suite
beside it runs the real executable against a real Bakery."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from bakery_cpi.client import ApiError
from bakery_cpi.cloud import Cloud
from bakery_cpi.config import CpiConfig
from bakery_cpi.errors import (
    CloudError,
    DiskNotAttached,
    DiskNotFound,
    MethodNotImplemented,
    NotSupported,
    VMCreationFailed,
    VMNotFound,
)
from bakery_cpi.log import CallLog

NETWORKS = {"default": {"type": "dynamic", "default": ["dns", "gateway"]}}
MAC = "dc:a6:32:00:00:01"


class FakeBakery:
    """The part of Bakery's API the CPI calls, in memory. ``fail`` maps a (method, path
    prefix) to the ApiError the next matching call raises; ``calls`` records every call."""

    def __init__(self) -> None:
        self.ids = (f"{n:032x}" for n in itertools.count(1))
        self.bakes: dict[str, dict[str, Any]] = {}
        self.disks: dict[str, dict[str, Any]] = {}
        self.settings: dict[str, dict[str, Any]] = {}
        self.bakeforms: dict[str, bytes] = {}
        self.calls: list[tuple[str, str]] = []
        self.bake_requests: list[dict[str, Any]] = []
        self.fail: dict[tuple[str, str], ApiError] = {}
        self.snapshots_supported = True

    # -- the client's interface ------------------------------------------------------

    def get(self, path: str, **query: str) -> Any:
        self._called("GET", path)
        if path == "/disks":
            return [d for d in self.disks.values() if d["bake_id"] == query.get("bake_id")]
        kind, key, *rest = path.strip("/").split("/")
        if kind == "bakes" and rest == ["agent-settings"]:
            self._bake(key)
            return self.settings.get(key, {})
        return self._bake(key) if kind == "bakes" else self._disk(key)

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        self._called("POST", path)
        body = body or {}
        if path == "/disks":
            disk_id = next(self.ids)
            bake_id = self._bake(body["bake_id"])["id"] if body.get("bake_id") else None
            disk = {"id": disk_id, "size_mib": body["size_mib"], "bake_id": bake_id,
                    "ephemeral": body.get("ephemeral", False),
                    "device": f"/dev/disk/by-id/bakery-{disk_id}"}  # fmt: skip
            self.disks[disk["id"]] = disk
            return disk
        if path == "/bakes":
            return self._bake_request(body)
        kind, key, action = path.strip("/").split("/")
        if kind == "bakes":
            self._bake(key)
            return {"serial": "00000001", "action": body["action"], "state": "on"}
        disk = self._disk(key)
        if action == "attach":
            disk["bake_id"] = self._bake(body["bake_id"])["id"]
            return disk
        elif action == "detach":
            disk["bake_id"] = None
        elif action == "resize":
            if body["size_mib"] < disk["size_mib"]:
                raise ApiError(409, "shrink_not_supported", "disks can grow but not shrink")
            disk["size_mib"] = body["size_mib"]
        elif action == "snapshots":
            if not self.snapshots_supported:
                raise ApiError(501, "not_supported", "snapshots need reflinks")
            return {"id": next(self.ids)}
        return disk

    def put(self, path: str, body: dict[str, Any]) -> Any:
        self._called("PUT", path)
        kind, key, what = path.strip("/").split("/")
        if kind == "bakes" and what == "agent-settings":
            self._bake(key)
            self.settings[key] = body
        return body

    def delete(self, path: str) -> Any:
        self._called("DELETE", path)
        kind, key = path.strip("/").split("/")
        if kind == "bakes":
            bake = self._bake(key)
            bake["state"] = "unbaked"
            for disk in [d for d in self.disks.values() if d["bake_id"] == key]:
                if disk["ephemeral"]:
                    del self.disks[disk["id"]]
                else:
                    disk["bake_id"] = None
        elif kind == "disks":
            if self._disk(key)["bake_id"]:
                raise ApiError(409, "conflict", "attached")
            del self.disks[key]
        elif kind == "snapshots":
            raise ApiError(404, "snapshot_not_found", "no snapshot")
        elif kind == "bakeforms":
            if key not in self.bakeforms:
                raise ApiError(404, "bakeform_not_found", "no bakeform")
            del self.bakeforms[key]

    def upload(self, path: str, stream: Any, length: int, **query: str) -> Any:
        self._called("PUT", path)
        name = path.rsplit("/", 1)[1]
        if name in self.bakeforms and query.get("replace") != "true":
            raise ApiError(409, "conflict", "exists")
        self.bakeforms[name] = stream.read()
        return {"name": name}

    # -- inside ----------------------------------------------------------------------

    def _called(self, method: str, path: str) -> None:
        self.calls.append((method, path))
        for (fail_method, prefix), error in list(self.fail.items()):
            if method == fail_method and path.startswith(prefix):
                del self.fail[(fail_method, prefix)]
                raise error

    def _bake_request(self, body: dict[str, Any]) -> dict[str, Any]:
        self.bake_requests.append(body)
        if body["bakeform"] not in self.bakeforms:
            raise ApiError(404, "bakeform_not_found", f"no bakeform named {body['bakeform']!r}")
        bake = {"id": next(self.ids), "state": "baked", "serial": "00000001", "mac": MAC,
                "ip": "10.0.0.21", "metadata": body.get("metadata", {})}  # fmt: skip
        self.bakes[bake["id"]] = bake
        for disk_id in body.get("disk_ids", []):
            self._disk(disk_id)["bake_id"] = bake["id"]
        return bake

    def _bake(self, key: str) -> dict[str, Any]:
        if key not in self.bakes or self.bakes[key]["state"] == "unbaked":
            raise ApiError(404, "bake_not_found", f"no bake {key!r}")
        return self.bakes[key]

    def _disk(self, key: str) -> dict[str, Any]:
        if key not in self.disks:
            raise ApiError(404, "disk_not_found", f"no disk {key!r}")
        return self.disks[key]


@pytest.fixture
def bakery() -> FakeBakery:
    fake = FakeBakery()
    fake.bakeforms["stemcell-1.0"] = b"image"
    return fake


@pytest.fixture
def log() -> CallLog:
    return CallLog()


@pytest.fixture
def cloud(bakery, log) -> Cloud:
    config = CpiConfig(url="http://bakery", token="t" * 32, mbus="nats://10.0.0.6:4222")
    return Cloud(bakery, config, 2, log)  # type: ignore[arg-type]  # the fake client


def live_disks(bakery: FakeBakery) -> list[dict[str, Any]]:
    return list(bakery.disks.values())


def test_create_vm_writes_the_settings_before_the_pi_powers_on(cloud, bakery):
    vm_cid, networks = cloud.create_vm("agent-1", "stemcell-1.0", {}, NETWORKS, [], {})

    order = [call for call in bakery.calls if call[0] != "GET"]
    assert order == [
        ("POST", "/bakes"),
        ("POST", "/disks"),  # on the bake's own host, attached to it
        ("PUT", f"/bakes/{vm_cid}/agent-settings"),
        ("POST", f"/bakes/{vm_cid}/power"),
    ]
    settings = bakery.settings[vm_cid]
    ephemeral = next(d for d in live_disks(bakery) if d["ephemeral"])
    assert settings["disks"]["ephemeral"]["id"] == ephemeral["id"]
    assert ephemeral["bake_id"] == vm_cid
    assert settings["agent_id"] == "agent-1" and settings["vm"]["name"] == vm_cid
    assert networks["default"]["mac"] == MAC and networks["default"]["preconfigured"]


def test_create_vm_asks_for_the_pi_where_the_vm_s_disks_are(cloud, bakery):
    cloud.create_vm("agent-1", "stemcell-1.0", {}, NETWORKS, ["d" * 32, "not-a-cid"], {})

    assert bakery.bake_requests[-1]["near_disks"] == ["d" * 32]


def test_create_vm_answers_only_the_cid_to_api_version_1(bakery, log):
    config = CpiConfig(url="http://bakery", token="t" * 32, mbus="nats://x:4222")
    answer = Cloud(bakery, config, 1, log).create_vm("a", "stemcell-1.0", {}, NETWORKS)  # type: ignore[arg-type]  # the fake client
    assert answer in bakery.bakes


def test_a_power_failure_rolls_back_the_bake_and_its_ephemeral_disk(cloud, bakery):
    bakery.fail[("POST", "/bakes/")] = ApiError(503, "power_failed", "relay did not answer")

    with pytest.raises(VMCreationFailed) as failed:
        cloud.create_vm("agent-1", "stemcell-1.0", {}, NETWORKS)

    assert failed.value.ok_to_retry
    assert all(bake["state"] == "unbaked" for bake in bakery.bakes.values())
    assert live_disks(bakery) == []


def test_no_free_pi_deletes_the_ephemeral_disk_and_may_be_retried(cloud, bakery):
    bakery.fail[("POST", "/bakes")] = ApiError(503, "no_pi_available", "no Pi available")

    with pytest.raises(VMCreationFailed) as failed:
        cloud.create_vm("agent-1", "stemcell-1.0", {}, NETWORKS)

    assert failed.value.ok_to_retry
    assert live_disks(bakery) == [] and bakery.bakes == {}


def test_a_missing_stemcell_is_a_creation_failure_not_worth_retrying(cloud, bakery):
    with pytest.raises(VMCreationFailed) as failed:
        cloud.create_vm("agent-1", "no-such-stemcell", {}, NETWORKS)

    assert not failed.value.ok_to_retry and "no-such-stemcell" in str(failed.value)
    assert live_disks(bakery) == []


def test_a_manual_network_address_the_pi_does_not_have_is_warned_about(cloud, log):
    manual = {"private": {"type": "manual", "ip": "10.0.0.99", "netmask": "255.255.255.0"}}
    cloud.create_vm("agent-1", "stemcell-1.0", {"ephemeral_disk_mib": 0}, manual)
    assert any("expects IP 10.0.0.99 but the Pi is at 10.0.0.21" in line for line in log.lines)


def test_attach_answers_the_device_bakery_names_and_never_reads_settings_back(cloud, bakery):
    """Bakery keeps the settings' persistent disks itself: their secrets are write-only."""
    vm_cid, _ = cloud.create_vm("agent-1", "stemcell-1.0", {}, NETWORKS)
    disk_cid = cloud.create_disk(1024, {})

    hint = cloud.attach_disk(vm_cid, disk_cid)

    assert hint == f"/dev/disk/by-id/bakery-{disk_cid}"
    assert cloud.get_disks(vm_cid) == [disk_cid]  # the ephemeral disk is not the director's
    cloud.detach_disk(vm_cid, disk_cid)
    assert cloud.get_disks(vm_cid) == []
    assert not [call for call in bakery.calls if call == ("GET", f"/bakes/{vm_cid}/agent-settings")]
    ephemeral = bakery.settings[vm_cid]["disks"]["ephemeral"]
    assert ephemeral["path"] == f"/dev/disk/by-id/bakery-{ephemeral['id']}"


def test_attach_tells_a_missing_vm_from_a_missing_disk(cloud):
    vm_cid, _ = cloud.create_vm("agent-1", "stemcell-1.0", {}, NETWORKS)
    disk_cid = cloud.create_disk(16, {})

    with pytest.raises(DiskNotFound):
        cloud.attach_disk(vm_cid, "f" * 32)
    with pytest.raises(VMNotFound):
        cloud.attach_disk("e" * 32, disk_cid)


def test_detach_refuses_a_disk_attached_elsewhere_and_accepts_one_that_is_gone(cloud):
    first, _ = cloud.create_vm("agent-1", "stemcell-1.0", {}, NETWORKS)
    second, _ = cloud.create_vm("agent-2", "stemcell-1.0", {}, NETWORKS)
    disk_cid = cloud.create_disk(16, {})
    cloud.attach_disk(first, disk_cid)

    with pytest.raises(DiskNotAttached):
        cloud.detach_disk(second, disk_cid)
    cloud.detach_disk(first, "d" * 32)  # deleted meanwhile: nothing to do


def test_vms_that_do_not_exist_are_vm_not_found_without_a_request_for_bad_cids(cloud, bakery):
    with pytest.raises(VMNotFound):
        cloud.delete_vm("a" * 32)
    calls = len(bakery.calls)
    with pytest.raises(VMNotFound):
        cloud.delete_vm("../../tokens")
    assert len(bakery.calls) == calls  # never put into a path
    assert cloud.has_vm("a" * 32) is False
    with pytest.raises(VMNotFound):
        cloud.get_disks("a" * 32)


def test_an_unbaked_vm_is_gone_and_keeps_its_persistent_disk(cloud, bakery):
    vm_cid, _ = cloud.create_vm("agent-1", "stemcell-1.0", {}, NETWORKS)
    disk_cid = cloud.create_disk(16, {})
    cloud.attach_disk(vm_cid, disk_cid)

    cloud.delete_vm(vm_cid)

    assert cloud.has_vm(vm_cid) is False
    assert [d["id"] for d in live_disks(bakery)] == [disk_cid]  # the ephemeral one went
    assert cloud.has_disk(disk_cid)


def test_a_shrink_is_not_supported_so_the_director_copies_the_disk(cloud):
    disk_cid = cloud.create_disk(1024, {})
    cloud.resize_disk(disk_cid, 2048)
    with pytest.raises(NotSupported):
        cloud.resize_disk(disk_cid, 512)
    with pytest.raises(DiskNotFound):
        cloud.resize_disk("0" * 32, 4096)


def test_snapshots_without_reflinks_are_not_implemented(cloud, bakery):
    disk_cid = cloud.create_disk(16, {})
    assert len(cloud.snapshot_disk(disk_cid, {"director": "d"})) == 32
    bakery.snapshots_supported = False
    with pytest.raises(MethodNotImplemented):
        cloud.snapshot_disk(disk_cid)
    cloud.delete_snapshot("c" * 32)  # already gone: fine


def test_create_disk_refuses_sizes_that_are_not_whole_mib(cloud, bakery):
    for size in (0, -1, 1.5, True, "10"):
        with pytest.raises(Exception, match="size must be a whole number"):
            cloud.create_disk(size, {})
    assert bakery.calls == []


def test_a_stemcell_is_named_by_its_name_and_version_and_replaced_on_reupload(
    cloud, bakery, tmp_path
):
    image = tmp_path / "image"
    image.write_bytes(b"first")
    properties = {"name": "bosh-pi/arm64 ubuntu", "version": "1.0"}

    name = cloud.create_stemcell(str(image), properties)
    image.write_bytes(b"second")

    assert cloud.create_stemcell(str(image), properties) == name == "bosh-pi-arm64-ubuntu-1.0"
    assert bakery.bakeforms[name] == b"second"
    cloud.delete_stemcell(name)
    cloud.delete_stemcell(name)  # already gone: fine
    with pytest.raises(CloudError, match="cannot read stemcell image"):
        cloud.create_stemcell(str(tmp_path / "missing"), properties)
