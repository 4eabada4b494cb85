"""The BOSH CPIs' lifecycle spec (bosh-cpi.md §7) against a live Bakery: every method,
in the director's order, through the real executable, checking on the server what each
call left behind (the agent settings and disks list in the bake's root)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bakery.redaction import redacted
from tests.support.loopfs import fs_tools, loop_filesystem

from .harness import (
    DISKS_FILE,
    SETTINGS_FILE,
    failed,
    live_disks,
    ok,
    register_pis,
    root_file,
)

AGENT_ID = "agent-7f3e"
NETWORKS = {
    "default": {
        "type": "dynamic",
        "cloud_properties": {},
        "dns": ["10.0.0.2"],
        "default": ["dns", "gateway"],
    }
}
ENV = {"bosh": {"group": "pi-deployment-web", "mbus": {"cert": {"ca": "PEM"}}}}


@pytest.fixture(
    params=[
        "tmpdir",
        pytest.param("xfs", marks=[pytest.mark.root, pytest.mark.tools(*fs_tools("xfs"))]),
    ]
)
def reflinks(request, tmp_path):
    """Where Bakery keeps its data: the temp dir (no reflinks here) or an xfs loop
    filesystem, where disk snapshots are reflinks. Yields (data dir, snapshots work)."""
    if request.param == "tmpdir":
        yield tmp_path / "data", False
        return
    with loop_filesystem("xfs", 1024, tmp_path) as mountpoint:
        yield mountpoint / "data", True


@pytest.fixture
def bakery_config(bakery_config, reflinks):
    return {**bakery_config, "root": str(reflinks[0])}


def partitions(image: Path) -> list[tuple[int, int, str]]:
    """(start, size, type) of each partition in the image's MBR, in sectors."""
    done = subprocess.run(["sfdisk", "--json", str(image)], capture_output=True, check=True)
    table = json.loads(done.stdout)["partitiontable"]
    assert table["label"] == "dos"
    return [(part["start"], part["size"], part["type"]) for part in table["partitions"]]


def settings_of(bakery, vm_cid: str) -> dict:
    return json.loads(root_file(bakery, vm_cid, SETTINGS_FILE).read_text())


def test_vm_and_disk_lifecycle(cpi, api, bakery, stemcell, reflinks):
    pi = register_pis(api, 1)[0]

    vm_cid, networks = ok(cpi("create_vm", AGENT_ID, stemcell, {}, NETWORKS, [], ENV))
    assert networks["default"]["mac"] == pi["mac"]
    assert ok(cpi("has_vm", vm_cid)) is True
    bake = api.get(f"{api.base}/bakes/{vm_cid}").json()
    assert bake["serial"] == pi["serial"] and bake["state"] == "baked"
    settings = settings_of(bakery, vm_cid)
    assert settings["agent_id"] == AGENT_ID
    assert settings["vm"]["name"] == vm_cid
    assert settings["mbus"] == "nats://nats:nats@10.0.0.6:4222"
    assert settings["env"] == ENV
    assert settings["networks"]["default"]["mac"] == pi["mac"]
    assert settings["networks"]["default"]["preconfigured"] is True
    [ephemeral] = bake["disks"]
    assert settings["disks"]["ephemeral"]["path"] == f"/dev/disk/by-id/bakery-{ephemeral}"
    assert settings["disks"]["persistent"] == {}
    served = api.get(f"{api.base}/bakes/{vm_cid}/agent-settings").json()
    assert served == redacted(settings)  # what the root holds, its secrets write-only
    assert served["mbus"] == "nats://nats:***@10.0.0.6:4222"
    assert ephemeral in root_file(bakery, vm_cid, DISKS_FILE).read_text()

    ok(cpi("set_vm_metadata", vm_cid, {"deployment": "web", "index": "0"}))
    assert api.get(f"{api.base}/bakes/{vm_cid}").json()["metadata"]["deployment"] == "web"

    disk_cid = ok(cpi("create_disk", 1024, {}, vm_cid))
    assert ok(cpi("has_disk", disk_cid)) is True
    # partitioned as the agent partitions it (one Linux partition), left for it to format
    assert partitions(bakery.root / "disks" / disk_cid / "disk.img") == [(2048, 2095104, "83")]
    assert ok(cpi("get_disks", vm_cid)) == []  # created beside the VM, not attached yet
    hint = ok(cpi("attach_disk", vm_cid, disk_cid))
    assert hint == f"/dev/disk/by-id/bakery-{disk_cid}"
    assert ok(cpi("get_disks", vm_cid)) == [disk_cid]
    persistent = settings_of(bakery, vm_cid)["disks"]["persistent"]
    assert persistent == {disk_cid: {"id": disk_cid, "path": hint}}
    assert disk_cid in root_file(bakery, vm_cid, DISKS_FILE).read_text()
    ok(cpi("set_disk_metadata", disk_cid, {"deployment": "web", "instance_index": "0"}))
    assert api.get(f"{api.base}/disks/{disk_cid}").json()["metadata"]["deployment"] == "web"

    snapshot = cpi("snapshot_disk", disk_cid, {"deployment": "web"})
    _, snapshots_work = reflinks
    if snapshots_work:
        ok(cpi("delete_snapshot", ok(snapshot)))
    else:
        assert "reflinks" in failed(snapshot, "NotImplemented")["message"]

    ok(cpi("detach_disk", vm_cid, disk_cid))
    assert ok(cpi("get_disks", vm_cid)) == []
    assert settings_of(bakery, vm_cid)["disks"]["persistent"] == {}
    assert disk_cid not in root_file(bakery, vm_cid, DISKS_FILE).read_text()
    ok(cpi("resize_disk", disk_cid, 2048))
    assert api.get(f"{api.base}/disks/{disk_cid}").json()["size_mib"] == 2048
    failed(cpi("resize_disk", disk_cid, 512), "NotSupported")
    ok(cpi("delete_disk", disk_cid))
    assert ok(cpi("has_disk", disk_cid)) is False

    ok(cpi("reboot_vm", vm_cid))
    events = api.get(f"{api.base}/pis/{pi['serial']}/events").json()
    assert any("cycle" in json.dumps(e) for e in events)
    ok(cpi("delete_vm", vm_cid))
    assert ok(cpi("has_vm", vm_cid)) is False
    assert live_disks(api) == []  # the ephemeral disk went with the VM
    assert api.get(f"{api.base}/pis/{pi['serial']}").json()["state"] == "available"
    ok(cpi("delete_stemcell", stemcell))
    assert api.get(f"{api.base}/bakeforms/{stemcell}").status_code == 404
