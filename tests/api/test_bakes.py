"""/api/v1/bakes: bake onto a free Pi, show, unbake, agent settings, metadata."""

from __future__ import annotations

import json
import os

import pytest

from bakery import models
from tests.conftest import install_ppi

from .conftest import assert_error, register


def bake(client, **body):
    return client.post("/api/v1/bakes", json={"bakeform": "raspios", **body})


def test_bake_on_any_free_pi_clones_seasons_and_exports(client, bakeform, pis, settings):
    response = bake(client)
    assert response.status_code == 201, response.json
    made = response.json
    assert made["state"] == "baked"
    serial = made["serial"]
    assert made["hostname"] == f"pi-{serial}"
    root = settings.path("bakes", made["id"], "root")
    assert (root / "etc" / "hostname").read_text().strip() == f"pi-{serial}"
    assert made["root_export"] == f"{settings.nfs_server}:{root}"
    pi = client.get(f"/api/v1/pis/{serial}").json
    assert pi["state"] == "baked" and pi["bake_id"] == made["id"]
    exports = open(settings.exports_file).read()
    assert str(root) in exports and pi["ip"] in exports
    assert [b["id"] for b in client.get("/api/v1/bakes").json] == [made["id"]]


def test_bake_a_given_serial_or_by_labels(client, bakeform):
    register(client, "00000001", labels=["usb"], ip="127.0.0.11")
    register(client, "00000002", ip="127.0.0.12")
    assert bake(client, serial="00000002").json["serial"] == "00000002"
    assert bake(client, labels=["usb"]).json["serial"] == "00000001"


def test_no_free_pi_is_a_clean_503(client, bakeform):
    register(client, "00000001", labels=["usb"])
    assert_error(bake(client, labels=["gpu"]), 503, "no_pi_available", "gpu")
    assert bake(client).status_code == 201
    assert_error(bake(client), 503, "no_pi_available")
    assert_error(bake(client, serial="00000001"), 503, "no_pi_available", "00000001")


def test_bake_rejects_bad_input(client, bakeform, pis):
    assert_error(bake(client, hostname="Not_A_Host"), 422, "validation_error", "hostname")
    assert_error(bake(client, serial="zz"), 422, "validation_error", "serial")
    assert_error(bake(client, labels="x"), 422, "validation_error", "labels")
    assert_error(client.post("/api/v1/bakes", json={}), 422, "validation_error", "bakeform")
    assert_error(client.post("/api/v1/bakes", json={"bakeform": "nope"}), 404, "bakeform_not_found")
    assert_error(bake(client, serial="0000abcd"), 404, "pi_not_found", "0000abcd")
    assert client.get("/api/v1/bakes").json == []
    assert {p["state"] for p in client.get("/api/v1/pis").json} == {"available"}


def test_unbake_removes_root_exports_and_frees_the_pi(client, bakeform, pis, settings):
    made = bake(client, hostname="worker-1").json
    root = settings.path("bakes", made["id"])
    unbaked = client.delete(f"/api/v1/bakes/{made['id']}")
    assert unbaked.status_code == 200 and unbaked.json["state"] == "unbaked"
    assert not root.exists()
    assert made["id"] not in open(settings.exports_file).read()
    assert client.get(f"/api/v1/pis/{made['serial']}").json["state"] == "available"
    assert client.get("/api/v1/bakes").json == []
    assert client.get("/api/v1/bakes?all=true").json[0]["state"] == "unbaked"
    assert_error(client.delete(f"/api/v1/bakes/{made['id']}"), 404, "bake_not_found", "unbaked")


def test_bake_ids_are_never_reused(client, bakeform):
    register(client, "00000001", ip="127.0.0.11")
    seen = set()
    for _ in range(3):
        made = bake(client).json
        assert made["id"] not in seen
        seen.add(made["id"])
        client.delete(f"/api/v1/bakes/{made['id']}")


def test_timeline_shows_every_step(client, bakeform, pis):
    made = bake(client, serial="00000001").json
    client.delete(f"/api/v1/bakes/{made['id']}")
    messages = [e["message"] for e in client.get("/api/v1/pis/00000001/events").json]
    for step in [
        "claimed for a bake",
        "root cloned",
        "root seasoned",
        "baked",
        "unbaking",
        "unbaked",
    ]:
        assert any(m.startswith(step) for m in messages), (step, messages)
    assert any(e["kind"] == "power" for e in client.get("/api/v1/pis/00000001/events").json)


def test_failed_power_on_rolls_the_bake_back_completely(client, bakeform, settings, ppi_dir):
    ppi = install_ppi(
        ppi_dir,
        "ppi",
        '#!/bin/sh\necho \'{"ok": false, "error": {"type": "fatal", "message": "no relay"}}\'\n',
        python=False,
    )
    register(
        client, "00000001", ip="127.0.0.11", power_driver="ppi", power_settings={"program": ppi}
    )
    assert_error(bake(client), 503, "power_failed", "no relay")
    assert client.get("/api/v1/pis/00000001").json["state"] == "available"
    assert list(settings.path("bakes").iterdir()) == []
    assert "00000001" not in open(settings.exports_file).read()
    assert client.get("/api/v1/bakes?all=true").json[0]["state"] == "failed"


def test_agent_settings_and_metadata(client, bakeform, pis):
    made = bake(client).json
    url = f"/api/v1/bakes/{made['id']}"
    assert client.get(f"{url}/agent-settings").json == {}
    body = {"agent_id": "agent-1", "mbus": "https://mbus", "env": {"bosh": {}}}
    assert client.put(f"{url}/agent-settings", json=body).json == body
    assert client.get(f"{url}/agent-settings").json == body
    assert client.put(f"{url}/metadata", json={"job": "web"}).json["metadata"] == {"job": "web"}
    assert_error(client.put(f"{url}/agent-settings", json=[1, 2]), 422, "validation_error")
    assert_error(
        client.put(f"{url}/metadata", data="x", content_type="application/json"), 400, "bad_request"
    )
    missing = "/api/v1/bakes/0123456789abcdef0123456789abcdef"
    assert_error(client.get(f"{missing}/agent-settings"), 404, "bake_not_found")
    assert_error(client.get("/api/v1/bakes/../etc"), 404, "not_found")


def test_a_pi_with_a_live_bake_cannot_be_deleted(client, bakeform, pis):
    made = bake(client).json
    assert_error(client.delete(f"/api/v1/pis/{made['serial']}"), 409, "conflict", "unbake")


def test_listing_bakes_validates_its_filters(client, bakeform, pis):
    made = bake(client, serial="00000002").json
    bake(client, serial="00000003")
    assert [b["id"] for b in client.get("/api/v1/bakes?serial=00000002").json] == [made["id"]]
    assert_error(client.get("/api/v1/bakes?serial=zz"), 422, "validation_error", "serial")
    assert_error(client.get("/api/v1/bakes?all=maybe"), 422, "validation_error", "all")
    assert_error(client.get("/api/v1/bakes?serial=0000ffff"), 404, "pi_not_found")


def test_agent_settings_are_written_into_the_bakes_root(client, bakeform, pis, settings):
    body = {"agent_id": "agent-7", "mbus": "nats://10.0.0.6:4222"}
    made = bake(client, agent_settings=body).json
    path = settings.path("bakes", made["id"], "root", settings.agent_settings_path)
    assert json.loads(path.read_text()) == body
    assert (path.stat().st_mode & 0o777) == 0o600
    client.put(f"/api/v1/bakes/{made['id']}/agent-settings", json={**body, "agent_id": "agent-8"})
    assert json.loads(path.read_text())["agent_id"] == "agent-8"


def test_a_hostile_root_cannot_redirect_the_settings_file(
    client, settings, sd_image_file, tmp_path
):
    """An image whose /var/vcap is a symlink to a host directory must not make Bakery
    write the agent settings (with its secrets) outside the Pi's root."""
    outside = tmp_path / "host-dir"
    outside.mkdir()
    forms = settings.path("bakeforms")
    with open(sd_image_file, "rb") as image:
        client.put("/api/v1/bakeforms/raspios", data=image, content_type="application/octet-stream")
    (forms / "raspios" / "root" / "var" / "vcap").symlink_to(outside)
    register(client, "00000001", ip="127.0.0.11")
    response = bake(client, agent_settings={"agent_id": "a"})
    assert_error(response, 422, "unsafe_bakeform")
    assert list(outside.iterdir()) == []
    assert client.get("/api/v1/pis/00000001").json["state"] == "available"


def test_disks_given_to_a_bake_are_attached_before_it_powers_on(client, bakeform, pis, settings):
    disk = client.post("/api/v1/disks", json={"size_mib": 8, "ephemeral": True}).json
    made = bake(client, disk_ids=[disk["id"]]).json
    assert made["disks"] == [disk["id"]]
    listing = settings.path("bakes", made["id"], "root", settings.disks_list_path).read_text()
    assert listing == f"{disk['id']} {settings.nfs_server}:{settings.path('disks', disk['id'])}\n"
    client.delete(f"/api/v1/bakes/{made['id']}")
    assert_error(client.get(f"/api/v1/disks/{disk['id']}"), 404, "disk_not_found")


def test_a_disk_of_another_bake_cannot_be_given_to_a_new_one(client, bakeform, pis):
    disk = client.post("/api/v1/disks", json={"size_mib": 8}).json
    bake(client, disk_ids=[disk["id"]])
    assert_error(bake(client, disk_ids=[disk["id"]]), 409, "conflict")
    assert_error(bake(client, disk_ids=["nope"]), 422, "validation_error", "disk_ids")


def test_the_disks_list_in_the_root_follows_attach_and_detach(client, bakeform, pis, settings):
    made = bake(client).json
    listing = settings.path("bakes", made["id"], "root", settings.disks_list_path)
    assert listing.read_text() == ""
    disk = client.post("/api/v1/disks", json={"size_mib": 8}).json
    client.post(f"/api/v1/disks/{disk['id']}/attach", json={"bake_id": made["id"]})
    assert listing.read_text().split()[0] == disk["id"]
    client.post(f"/api/v1/disks/{disk['id']}/detach")
    assert listing.read_text() == ""


def test_a_pi_reads_its_own_agent_settings_without_a_token(
    client, anonymous, bakeform, pis, settings
):
    """With the secret only its root holds, from its own address: an address alone is a
    claim anyone on the Pi LAN can make (the mbus credentials were served by address)."""
    made = bake(client, agent_settings={"agent_id": "agent-1", "mbus": "nats://n:pw@h:4222"}).json
    secret = settings.path("bakes", made["id"], "root", settings.bake_secret_path)
    assert (secret.stat().st_mode & 0o777) == 0o600
    shown = {"X-Bakery-Bake-Secret": secret.read_text()}

    def ask(address: str, headers: dict[str, str]):
        return anonymous.get(
            "/api/v1/metadata/agent-settings",
            environ_base={"REMOTE_ADDR": address},
            headers=headers,
        )

    mine = ask(made["ip"], shown)
    assert mine.status_code == 200 and mine.json["mbus"] == "nats://n:pw@h:4222"
    assert_error(ask(made["ip"], {}), 404, "agent_settings_not_found")
    assert_error(
        ask(made["ip"], {"X-Bakery-Bake-Secret": "guess"}), 404, "agent_settings_not_found"
    )
    assert_error(ask("127.0.0.99", shown), 404, "agent_settings_not_found")


def test_agent_settings_are_write_only(client, bakeform, pis):
    body = {
        "agent_id": "a",
        "mbus": "nats://nats:hushed@10.0.0.6:4222",
        "env": {"bosh": {"password": "hush2"}},
        "blobstore": {"options": {"secret": "x"}},
    }
    made = bake(client, agent_settings=body).json
    answers = [
        client.put(f"/api/v1/bakes/{made['id']}/agent-settings", json=body).get_data(as_text=True),
        client.get(f"/api/v1/bakes/{made['id']}/agent-settings").get_data(as_text=True),
    ]
    for answer in answers:
        assert "hush" not in answer and '"x"' not in answer
        assert "nats://nats:***@10.0.0.6:4222" in answer


def test_a_bake_can_wait_for_its_settings_before_powering_on(client, bakeform, pis):
    made = bake(client, power_on=False).json
    events = client.get(f"/api/v1/pis/{made['serial']}/events").json
    assert not [e for e in events if e["kind"] == "power"]
    assert made["state"] == "baked"
    client.put(f"/api/v1/bakes/{made['id']}/agent-settings", json={"vm": {"name": made["id"]}})
    powered = client.post(f"/api/v1/bakes/{made['id']}/power", json={"action": "on"})
    assert powered.status_code == 200 and powered.json["serial"] == made["serial"]
    events = client.get(f"/api/v1/pis/{made['serial']}/events").json
    assert [e["data"]["action"] for e in events if e["kind"] == "power"] == ["on"]
    assert_error(
        client.post(f"/api/v1/bakes/{made['id']}/power", json={"action": "dance"}),
        422,
        "validation_error",
        "action",
    )
    client.delete(f"/api/v1/bakes/{made['id']}")
    assert_error(
        client.post(f"/api/v1/bakes/{made['id']}/power", json={"action": "on"}),
        404,
        "bake_not_found",
    )


def test_every_bake_gets_the_disk_agent_and_its_timer(client, bakeform, pis, settings):
    made = bake(client).json
    root = settings.path("bakes", made["id"], "root")
    assert os.access(root / "usr/local/sbin/bakery-disk-agent", os.X_OK)
    timer = root / "etc/systemd/system/timers.target.wants/bakery-disk-agent.timer"
    assert os.readlink(timer) == "/etc/systemd/system/bakery-disk-agent.timer"


def test_the_api_lists_bakes_without_a_query_per_bake(client, bakeform, count_queries):
    for number in range(1, 6):
        serial = f"0000000{number}"
        client.post("/api/v1/pis", json={"serial": serial, "ip": f"127.0.0.{10 + number}"})
        made = client.post("/api/v1/bakes", json={"bakeform": "raspios", "serial": serial}).json
        client.post("/api/v1/disks", json={"size_mib": 4, "bake_id": made["id"]})
    with count_queries() as sql:
        listed = client.get("/api/v1/bakes").json
    assert len(listed) == 5 and all(len(bake["disks"]) == 1 for bake in listed)
    assert len(sql) <= 4, sql  # the token check, its last use, and the two of the list


def test_user_data_reaches_the_roots_seed_and_never_an_answer(client, bakeform, pis, settings):
    user_data = "#cloud-config\nruncmd:\n  - [sh, -c, 'echo secret-token-123 > /run/x']\n"

    made = bake(client, user_data=user_data).json

    seed = settings.path("bakes", made["id"], "root", "var/lib/cloud/seed/nocloud")
    assert (seed / "user-data").read_text() == user_data
    assert f"instance-id: {made['id']}" in (seed / "meta-data").read_text()
    for answer in (made, client.get(f"/api/v1/bakes/{made['id']}").json):
        assert "secret-token-123" not in json.dumps(answer)
    events = client.get(f"/api/v1/pis/{made['serial']}/events").json
    assert "secret-token-123" not in json.dumps(events)


def test_user_data_with_a_yaml_error_is_refused_with_its_line_and_bakes_nothing(
    client, bakeform, pis
):
    broken = "#cloud-config\npackages:\n  - k3s\n runcmd: [\n"

    error = assert_error(bake(client, user_data=broken), 422, "validation_error", "user_data")

    assert "line 4" in error["message"]
    assert client.get("/api/v1/bakes").json == []
    assert {p["state"] for p in client.get("/api/v1/pis").json} == {"available"}


def test_user_data_over_its_limit_is_refused_naming_the_field(client, bakeform, pis):
    huge = "#!/bin/sh\n" + "# padding\n" * 30_000

    assert_error(bake(client, user_data=huge), 422, "validation_error", "user_data")
    assert client.get("/api/v1/bakes").json == []


def test_a_bake_over_http_needs_the_http_boot_server_and_leaves_nothing(client, bakeform, pis):
    """The test server has no ``http_boot_bind``: a bake over HTTP is refused whole,
    whether asked for or the Pi's own setting (made while the server had HTTP boot)."""
    serial = pis[0]["serial"]
    asked = client.post("/api/v1/bakes", json={"bakeform": "raspios", "boot_protocol": "http"})
    setting = client.patch(f"/api/v1/pis/{serial}", json={"boot_protocol": "http"})
    with models.database.connection_context():
        models.Pi.update(boot_protocol="http").where(models.Pi.serial == serial).execute()
    by_pi = client.post("/api/v1/bakes", json={"bakeform": "raspios", "serial": serial})

    for response in (asked, setting, by_pi):
        assert_error(response, 422, "validation_error", "boot_protocol", "http_boot_bind")
    assert {pi["state"] for pi in client.get("/api/v1/pis").json} == {"available"}
    assert client.get("/api/v1/bakes").json == []


def test_boot_protocols_are_tftp_or_http(client, bakeform, pis):
    serial = pis[0]["serial"]
    for bad in ["pxe", "HTTP", "", 7, None]:
        registered = client.post("/api/v1/pis", json={"serial": "0000abcd", "boot_protocol": bad})
        changed = client.patch(f"/api/v1/pis/{serial}", json={"boot_protocol": bad})
        baked = client.post("/api/v1/bakes", json={"bakeform": "raspios", "boot_protocol": bad})
        for response in (registered, changed):
            assert_error(response, 422, "validation_error", "boot_protocol")
        if bad is not None:  # a bake's null is "the Pi's own"
            assert_error(baked, 422, "validation_error", "boot_protocol")
    assert client.get(f"/api/v1/pis/{serial}").json["boot_protocol"] == "tftp"
    made = client.post("/api/v1/bakes", json={"bakeform": "raspios", "boot_protocol": "tftp"})
    assert made.json["boot_protocol"] == "tftp"


@pytest.mark.parametrize("near_disks", [["../../etc"], "d" * 32, [{"id": "x"}], [None]])
def test_a_malformed_placement_hint_is_refused_naming_it_and_takes_no_pi(
    client, bakeform, pis, near_disks
):
    assert_error(bake(client, near_disks=near_disks), 422, "validation_error", "near_disks")
    assert {pi["state"] for pi in client.get("/api/v1/pis").json} == {"available"}


def test_a_hint_naming_disks_that_do_not_exist_still_bakes(client, bakeform, pis):
    assert bake(client, near_disks=["f" * 32]).status_code == 201
