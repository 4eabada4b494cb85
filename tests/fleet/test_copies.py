"""fleet.copies: a host bakes a bakeform another host imported from its own copy, made
from the importing host's kept upload (fetched from that host's real API with its host
token, sha256 checked). A copy that cannot be made fails the bake cleanly: the Pi is
free again and nothing half-copied is left."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
import requests
from werkzeug.serving import make_server

from bakery import auth
from bakery.errors import Unavailable
from bakery.fleet import Fleet
from bakery.models import Bakeform, Host, Pi, utcnow

#: Roles that may not fetch an upload (only ``host`` and ``admin`` may).
ROLES_BELOW = ("operator", "cpi", "viewer")

pytestmark = pytest.mark.parametrize(
    "db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)


@pytest.fixture
def source_api(app, fleet, settings) -> Iterator[str]:
    """The importing host's API (the test's app), served for real on loopback; its URL
    is in its row."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}"
    fleet.join_host()
    Host.update(url=url).where(Host.name == settings.host_id).execute()
    yield url
    server.shutdown()


@pytest.fixture
def rack2(settings, tmp_path, source_api) -> Fleet:
    other = Fleet(dataclasses.replace(settings, host_id="rack-2", root=tmp_path / "rack2"))
    other.settings.root.mkdir()
    other.join_host()
    auth.ensure_host_token(other.settings)
    other.register_pi("00000002", ip="127.0.0.12")
    return other


def test_a_host_bakes_from_its_own_copy_of_another_host_s_import(fleet, raspios, rack2):
    bake = rack2.bake("raspios", serial="00000002")

    copy = rack2.bakeform_dir("raspios")
    assert (copy / "root" / "etc").is_dir() and (copy / "boot").is_dir()
    assert not (copy / "upload").exists()  # only the importing host keeps the upload
    assert (rack2.bake_root(bake.id) / "etc" / "hostname").read_text() == "pi-00000002\n"
    assert fleet.bakeform_copies(Bakeform.get(Bakeform.name == "raspios")) == {
        fleet.settings.host_id: "ready",
        "rack-2": "ready",
    }


def test_an_upload_that_is_not_the_one_imported_fails_the_bake_and_leaves_nothing(
    fleet, raspios, rack2
):
    Bakeform.update(sha256="0" * 64).where(Bakeform.name == "raspios").execute()

    with pytest.raises(Unavailable, match="sha256 differs") as failed:
        rack2.bake("raspios", serial="00000002")

    assert failed.value.code == "bakeform_copy_failed"
    assert_nothing_made(rack2)
    assert fleet.bakeform_copies(Bakeform.get(Bakeform.name == "raspios"))["rack-2"] == "failed"


def test_no_copy_is_made_from_a_source_host_that_is_down(fleet, raspios, rack2):
    Host.update(heartbeat_at=utcnow() - timedelta(minutes=5)).where(
        Host.name == fleet.settings.host_id
    ).execute()

    with pytest.raises(Unavailable, match="which is down"):
        rack2.bake("raspios", serial="00000002")

    assert_nothing_made(rack2)


def test_a_copy_is_refused_without_a_valid_host_token(fleet, raspios, rack2):
    rack2.settings.host_token_file.write_text("bky_" + "x" * 40 + "\n")  # not a token

    with pytest.raises(Unavailable, match="answered 401"):
        rack2.bake("raspios", serial="00000002")

    assert_nothing_made(rack2)


def test_the_upload_is_given_to_host_and_admin_tokens_only_and_only_by_its_source(
    fleet, raspios, source_api, sd_image_file
):
    client = requests.Session()
    url = f"{source_api}/api/v1/bakeforms/raspios/upload"
    headers = {
        role: {"Authorization": f"Bearer {auth.create_token(f'a-{role}', role=role)[1]}"}
        for role in ("host", "admin", *ROLES_BELOW)
    }

    given = client.get(url, headers=headers["host"])
    refused = {role: client.get(url, headers=headers[role]).status_code for role in ROLES_BELOW}
    traversal = client.get(
        f"{source_api}/api/v1/bakeforms/..%2Fbakes/upload", headers=headers["admin"]
    )
    Bakeform.update(source_host="rack-2").where(Bakeform.name == "raspios").execute()
    elsewhere = client.get(url, headers=headers["admin"])

    assert given.status_code == 200 and given.content == sd_image_file.read_bytes()
    assert refused == dict.fromkeys(ROLES_BELOW, 403)
    assert traversal.status_code in (404, 422)
    assert (elsewhere.status_code, elsewhere.json()["error"]["code"]) == (404, "upload_not_here")


def test_a_copy_host_clones_its_way_not_the_importing_host_s(fleet, raspios, rack2):
    # the importing host's data dir is on btrfs: it snapshots, which rack-2 cannot
    Bakeform.update(clone_method="snapshot").where(Bakeform.name == "raspios").execute()

    bake = rack2.bake("raspios", serial="00000002")

    assert (rack2.bake_root(bake.id) / "etc" / "hostname").is_file()
    cloned = [e for e in rack2.timeline("00000002") if e.message == "root cloned"]
    assert cloned[-1].data["method"] != "snapshot"


def assert_nothing_made(host: Fleet) -> None:
    assert Pi.get(Pi.serial == "00000002").state == "available"
    assert not host.bakeform_dir("raspios").exists()
    assert not any(host.settings.path("bakes").glob("*/root"))
    assert list(host.settings.path("bakeforms").iterdir()) == []  # no staging left
