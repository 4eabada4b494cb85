"""/api/v1/disks with a filesystem and a mount point: the container-ready disk, formatted
by Bakery when it is made and mounted by the disk agent at boot."""

from __future__ import annotations

import os
import subprocess

import pytest

from .conftest import assert_error

pytestmark = pytest.mark.tools("mkfs.ext4", "dumpe2fs", "e2fsck", "resize2fs", "debugfs")

RANCHER = "/var/lib/rancher"


def superblock(image) -> dict[str, str]:
    """dumpe2fs's view of the image's superblock: ``{"Block count": "...", ...}``."""
    out = subprocess.run(
        ["dumpe2fs", "-h", str(image)], check=True, capture_output=True, text=True
    ).stdout
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in out.splitlines())}


def is_clean(image) -> bool:
    return subprocess.run(["e2fsck", "-f", "-n", str(image)], capture_output=True).returncode == 0


def disks_list(settings, bake_id: str) -> list[list[str]]:
    listing = settings.path("bakes", bake_id, "root", settings.disks_list_path)
    return [line.split() for line in listing.read_text().splitlines()]


def create(client, **body):
    return client.post("/api/v1/disks", json={"size_mib": 64, **body})


def test_a_disk_made_with_ext4_is_a_clean_filesystem_named_by_its_id(client, settings):
    disk = create(client, size_mib=8192, filesystem="ext4", mount_point=RANCHER).json

    image = settings.path("disks", disk["id"], "disk.img")
    sb = superblock(image)
    assert sb["Filesystem UUID"].replace("-", "") == disk["id"]
    assert int(sb["Block count"]) * int(sb["Block size"]) == 8192 << 20
    assert is_clean(image)
    assert image.stat().st_blocks * 512 < 16 << 20, "formatting must keep the image sparse"
    assert (disk["filesystem"], disk["mount_point"]) == ("ext4", RANCHER)
    assert client.get(f"/api/v1/disks/{disk['id']}").json["mount_point"] == RANCHER


def test_a_raw_disk_stays_raw(client, settings):
    disk = create(client).json

    image = settings.path("disks", disk["id"], "disk.img")
    assert image.stat().st_blocks == 0
    assert (disk["filesystem"], disk["mount_point"]) == (None, None)


@pytest.mark.parametrize(
    "mount_point",
    [
        "var/lib/rancher",
        "/",
        "/etc",
        "/usr/local/containerd",
        "/proc/x",
        "/run/bakery",
        "/var/../etc",
        "/var/./lib",
        "/var//lib",
        "/var/lib/",
        "/var/lib/my disk",
        "/var/lib/$(reboot)",
        "/var/lib/\nx",
        "/" + "a" * 300,
        "/var",
        "/var/lib/bakery",
        "/var/lib/cloud",
        "/var/vcap",
        "/var/run/containerd",
        "/var/lock/x",
        17,
    ],
)
def test_a_mount_point_that_is_not_a_plain_place_of_its_own_is_refused(
    client, settings, mount_point
):
    response = create(client, filesystem="ext4", mount_point=mount_point)

    assert_error(response, 422, "validation_error", "mount_point")
    assert client.get("/api/v1/disks").json == []
    assert not settings.path("disks").exists() or not os.listdir(settings.path("disks"))


def test_a_mount_point_needs_a_filesystem_and_the_filesystem_one_bakery_makes(client):
    assert_error(create(client, mount_point=RANCHER), 422, "validation_error", "mount_point")
    for bad in ["xfs", "btrfs", "EXT4", "", None, 4]:
        response = create(client, filesystem=bad, mount_point=RANCHER)
        assert_error(response, 422, "validation_error", "filesystem")
    assert client.get("/api/v1/disks").json == []


def test_the_disks_list_tells_the_agent_what_to_mount_where(client, bakeform, pis, settings):
    bake = client.post("/api/v1/bakes", json={"bakeform": "raspios"}).json
    inner = create(client, filesystem="ext4", mount_point=f"{RANCHER}/k3s", bake_id=bake["id"])
    outer = create(client, filesystem="ext4", mount_point=RANCHER, bake_id=bake["id"])
    raw = create(client, bake_id=bake["id"])
    inner, outer, raw = inner.json, outer.json, raw.json

    lines = disks_list(settings, bake["id"])

    server = settings.nfs_server
    assert lines == [
        [raw["id"], f"{server}:{settings.path('disks', raw['id'])}"],
        [outer["id"], f"{server}:{settings.path('disks', outer['id'])}", "ext4", RANCHER],
        [inner["id"], f"{server}:{settings.path('disks', inner['id'])}", "ext4", f"{RANCHER}/k3s"],
    ], "a disk mounted inside another comes after it"


def test_two_disks_of_one_bake_never_share_a_mount_point(client, bakeform, pis, settings):
    bake = client.post("/api/v1/bakes", json={"bakeform": "raspios"}).json
    first = create(client, filesystem="ext4", mount_point=RANCHER, bake_id=bake["id"]).json

    clash = create(client, filesystem="ext4", mount_point=RANCHER, bake_id=bake["id"])
    assert_error(clash, 409, "conflict", RANCHER)
    assert [d["id"] for d in client.get("/api/v1/disks").json] == [first["id"]]
    assert sorted(os.listdir(settings.path("disks"))) == [first["id"]]

    second = create(client, filesystem="ext4", mount_point=RANCHER).json
    url = f"/api/v1/disks/{second['id']}/attach"
    assert_error(client.post(url, json={"bake_id": bake["id"]}), 409, "conflict", RANCHER)
    assert client.get(f"/api/v1/disks/{second['id']}").json["bake_id"] is None
    assert [line[0] for line in disks_list(settings, bake["id"])] == [first["id"]]

    moved = client.post(url, json={"bake_id": bake["id"], "mount_point": "/var/lib/docker"})
    assert moved.status_code == 200, moved.json
    assert moved.json["mount_point"] == "/var/lib/docker"
    assert disks_list(settings, bake["id"])[0][3] == "/var/lib/docker"


def test_a_bake_given_two_disks_for_one_mount_point_is_refused_whole(
    client, bakeform, pis, settings
):
    disks = [create(client, filesystem="ext4", mount_point=RANCHER).json for _ in range(2)]

    response = client.post(
        "/api/v1/bakes", json={"bakeform": "raspios", "disk_ids": [d["id"] for d in disks]}
    )

    assert_error(response, 409, "conflict", RANCHER)
    assert all(client.get(f"/api/v1/disks/{d['id']}").json["bake_id"] is None for d in disks)
    assert {pi["state"] for pi in client.get("/api/v1/pis").json} == {"available"}
    assert client.get("/api/v1/bakes").json == []


def test_an_attached_disk_takes_a_new_mount_point(client, bakeform, pis, settings):
    bake = client.post("/api/v1/bakes", json={"bakeform": "raspios"}).json
    disk = create(client, filesystem="ext4", mount_point=RANCHER, bake_id=bake["id"]).json

    again = client.post(
        f"/api/v1/disks/{disk['id']}/attach",
        json={"bake_id": bake["id"], "mount_point": "/var/lib/containerd"},
    )

    assert again.json["mount_point"] == "/var/lib/containerd"
    assert disks_list(settings, bake["id"])[0][2:] == ["ext4", "/var/lib/containerd"]


def test_a_raw_disk_cannot_be_attached_with_a_mount_point(client, bakeform, pis):
    bake = client.post("/api/v1/bakes", json={"bakeform": "raspios"}).json
    disk = create(client).json

    response = client.post(
        f"/api/v1/disks/{disk['id']}/attach", json={"bake_id": bake["id"], "mount_point": RANCHER}
    )

    assert_error(response, 422, "validation_error", "mount_point")
    assert client.get(f"/api/v1/disks/{disk['id']}").json["bake_id"] is None


def test_growing_a_formatted_disk_grows_its_image_and_leaves_the_filesystem_to_the_pi(
    client, bakeform, pis, settings
):
    """The server never runs e2fsck or resize2fs on what a Pi wrote: the disk agent grows
    the filesystem online (tests/stemcell/test_disk_agent.py)."""
    bake = client.post("/api/v1/bakes", json={"bakeform": "raspios"}).json
    disk = create(client, filesystem="ext4", mount_point=RANCHER, bake_id=bake["id"]).json
    image = settings.path("disks", disk["id"], "disk.img")
    blocks = superblock(image)["Block count"]

    grown = client.post(f"/api/v1/disks/{disk['id']}/resize", json={"size_mib": 256})

    assert grown.status_code == 200, grown.json
    assert grown.json["size_mib"] == 256 and image.stat().st_size == 256 << 20
    assert superblock(image)["Block count"] == blocks
    assert is_clean(image)
