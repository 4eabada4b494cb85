"""/api/v1/disks: sparse images, attach to one bake, exported to that Pi only."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from .conftest import assert_error

NO_SUCH = "0123456789abcdef0123456789abcdef"


def test_create_a_sparse_disk(client, settings):
    disk = client.post("/api/v1/disks", json={"size_mib": 1024}).json
    image = settings.path("disks", disk["id"], "disk.img")
    assert image.stat().st_size == 1024 * 1024 * 1024
    assert image.stat().st_blocks == 0
    assert client.get(f"/api/v1/disks/{disk['id']}").json["size_mib"] == 1024
    assert [d["id"] for d in client.get("/api/v1/disks").json] == [disk["id"]]


def test_create_rejects_bad_sizes(client, settings):
    for bad in [0, -1, "10", 1.5, None, 10**9]:
        response = client.post("/api/v1/disks", json={"size_mib": bad})
        assert response.status_code == 422, bad
        assert "size_mib" in response.json["error"]["message"]
    assert client.get("/api/v1/disks").json == []
    assert not settings.path("disks").exists() or not os.listdir(settings.path("disks"))


def test_attach_exports_to_the_pi_and_detach_unexports(client, bakeform, pis, settings):
    made = client.post("/api/v1/bakes", json={"bakeform": "raspios"}).json
    disk = client.post("/api/v1/disks", json={"size_mib": 10}).json
    attached = client.post(f"/api/v1/disks/{disk['id']}/attach", json={"bake_id": made["id"]})
    assert attached.json["bake_id"] == made["id"]
    exports = open(settings.exports_file).read()
    assert str(settings.path("disks", disk["id"])) in exports
    assert client.get(f"/api/v1/bakes/{made['id']}").json["disks"] == [disk["id"]]
    assert_error(client.delete(f"/api/v1/disks/{disk['id']}"), 409, "conflict", "detach")
    other = client.post("/api/v1/bakes", json={"bakeform": "raspios"}).json
    assert_error(
        client.post(f"/api/v1/disks/{disk['id']}/attach", json={"bake_id": other["id"]}),
        409,
        "conflict",
    )
    assert client.post(f"/api/v1/disks/{disk['id']}/detach").json["bake_id"] is None
    assert str(settings.path("disks", disk["id"])) not in open(settings.exports_file).read()
    assert client.delete(f"/api/v1/disks/{disk['id']}").status_code == 204
    assert not settings.path("disks", disk["id"]).exists()


def test_unbake_deletes_ephemeral_disks_and_keeps_persistent_ones(client, bakeform, pis, settings):
    made = client.post("/api/v1/bakes", json={"bakeform": "raspios"}).json
    eph = client.post(
        "/api/v1/disks", json={"size_mib": 5, "bake_id": made["id"], "ephemeral": True}
    ).json
    keep = client.post("/api/v1/disks", json={"size_mib": 5, "bake_id": made["id"]}).json
    client.delete(f"/api/v1/bakes/{made['id']}")
    assert_error(client.get(f"/api/v1/disks/{eph['id']}"), 404, "disk_not_found")
    assert not settings.path("disks", eph["id"]).exists()
    assert client.get(f"/api/v1/disks/{keep['id']}").json["bake_id"] is None


def test_resize_grows_and_refuses_to_shrink(client, settings):
    disk = client.post("/api/v1/disks", json={"size_mib": 10}).json
    assert (
        client.post(f"/api/v1/disks/{disk['id']}/resize", json={"size_mib": 20}).json["size_mib"]
        == 20
    )
    assert settings.path("disks", disk["id"], "disk.img").stat().st_size == 20 << 20
    assert_error(
        client.post(f"/api/v1/disks/{disk['id']}/resize", json={"size_mib": 5}),
        409,
        "shrink_not_supported",
    )


def test_unknown_and_malformed_ids_are_404_or_422(client):
    assert_error(client.get(f"/api/v1/disks/{NO_SUCH}"), 404, "disk_not_found")
    assert_error(client.get("/api/v1/disks/..%2F..%2Fetc"), 404, "not_found")
    assert_error(client.delete(f"/api/v1/disks/{NO_SUCH}"), 404, "disk_not_found")
    assert_error(client.post(f"/api/v1/disks/{NO_SUCH}/detach"), 404, "disk_not_found")
    disk = client.post("/api/v1/disks", json={"size_mib": 1}).json
    assert_error(
        client.post(f"/api/v1/disks/{disk['id']}/attach", json={"bake_id": "x"}),
        422,
        "validation_error",
        "bake_id",
    )
    assert_error(
        client.post(f"/api/v1/disks/{disk['id']}/attach", json={"bake_id": NO_SUCH}),
        404,
        "bake_not_found",
    )
    assert_error(
        client.post("/api/v1/disks", json={"size_mib": 1, "bake_id": NO_SUCH}),
        404,
        "bake_not_found",
    )


def test_disk_metadata(client):
    disk = client.post("/api/v1/disks", json={"size_mib": 1}).json
    url = f"/api/v1/disks/{disk['id']}/metadata"
    assert client.put(url, json={"deployment": "cf"}).json["metadata"] == {"deployment": "cf"}
    assert_error(client.put(url, json=["x"]), 422, "validation_error")
    assert_error(client.put(f"/api/v1/disks/{NO_SUCH}/metadata", json={}), 404, "disk_not_found")


def test_snapshots_need_a_reflink_filesystem(client, settings):
    """The test data dir is on the machine's own filesystem (no reflinks): a clear 501."""
    disk = client.post("/api/v1/disks", json={"size_mib": 1}).json
    response = client.post(f"/api/v1/disks/{disk['id']}/snapshots", json={})
    if response.status_code == 201:
        pytest.skip("this machine's temp dir has reflinks; tests/test_disks.py covers it")
    assert_error(response, 501, "not_supported", "reflink")
    assert not settings.path("snapshots").exists() or not os.listdir(settings.path("snapshots"))
    assert_error(client.get(f"/api/v1/snapshots/{NO_SUCH}"), 404, "snapshot_not_found")
    assert_error(client.delete(f"/api/v1/snapshots/{NO_SUCH}"), 404, "snapshot_not_found")


@pytest.mark.parametrize("near", ["../bakes", 7, ["x"], "a" * 33])
def test_a_malformed_near_is_refused_naming_it_and_makes_no_disk(client, near):
    response = client.post("/api/v1/disks", json={"size_mib": 8, "near": near})
    assert_error(response, 422, "validation_error", "near")
    assert client.get("/api/v1/disks").json == []


def test_a_disk_near_a_bake_that_is_gone_is_made_here(client):
    made = client.post("/api/v1/disks", json={"size_mib": 8, "near": "f" * 32})
    assert made.status_code == 201 and made.json["bake_id"] is None


def partitions(image) -> list[tuple[int, int, str]]:
    """(start, size, type) of each partition in the image's MBR, in sectors."""
    done = subprocess.run(["sfdisk", "--json", str(image)], capture_output=True, check=True)
    table = json.loads(done.stdout)["partitiontable"]
    assert table["label"] == "dos"
    return [(part["start"], part["size"], part["type"]) for part in table["partitions"]]


@pytest.mark.tools("sfdisk", "blkid")
def test_a_disk_for_bosh_is_made_with_one_linux_partition_left_unformatted(client, settings):
    disk = client.post("/api/v1/disks", json={"size_mib": 64, "partitioned": True}).json
    image = settings.path("disks", disk["id"], "disk.img")

    assert partitions(image) == [(2048, 64 * 2048 - 2048, "83")]
    # no filesystem in the partition, for the agent to make; only the table was written
    probe = subprocess.run(["blkid", "-p", "-O", str(1024 * 1024), str(image)], check=False)
    assert probe.returncode == 2
    assert image.stat().st_blocks * 512 <= 64 * 1024


def test_a_partitioned_disk_is_not_also_formatted(client, settings):
    response = client.post(
        "/api/v1/disks", json={"size_mib": 64, "partitioned": True, "filesystem": "ext4"}
    )

    assert_error(response, 422, "validation_error", "partitioned")
    assert client.get("/api/v1/disks").json == []
    assert not settings.path("disks").exists() or not os.listdir(settings.path("disks"))
