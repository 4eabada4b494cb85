"""Owners: what a token bakes, its disks and the bakeforms it imports belong to its owner;
a cpi or operator token sees and changes only its owner's bakes and disks, an admin all of
them, a viewer reads all; every event names the token that caused it."""

from __future__ import annotations

import pytest

from bakery import auth
from bakery.models import Event, database

from .conftest import assert_error, register


@pytest.fixture
def as_token(app, anonymous):
    """``as_token(name, role, owner)``: a client function sending that token."""

    def make(name: str, role: str, owner: str = ""):
        with database.connection_context():
            _, token = auth.create_token(name, role=role, owner=owner)
        headers = {"Authorization": f"Bearer {token}"}

        def call(method: str, path: str, **kwargs):
            return getattr(anonymous, method)(f"/api/v1{path}", headers=headers, **kwargs)

        return call

    return make


@pytest.fixture
def two_directors(client, bakeform, as_token):
    """Two BOSH directors (cpi tokens of owners a and b), each with a bake and a disk."""
    for number in (1, 2):
        register(client, f"0000000{number}", ip=f"127.0.0.{10 + number}")
    made = {}
    for owner in ("a", "b"):
        director = as_token(f"director-{owner}", "cpi", owner)
        bake = director("post", "/bakes", json={"bakeform": "raspios"}).json
        disk = director("post", "/disks", json={"size_mib": 4}).json
        made[owner] = (director, bake, disk)
    return made


def test_a_director_sees_only_its_own_bakes_and_disks(two_directors):
    director, bake, disk = two_directors["a"]
    _, other_bake, other_disk = two_directors["b"]
    assert [b["id"] for b in director("get", "/bakes").json] == [bake["id"]]
    assert [d["id"] for d in director("get", "/disks").json] == [disk["id"]]
    assert_error(director("get", f"/bakes/{other_bake['id']}"), 404, "bake_not_found")
    assert_error(director("get", f"/disks/{other_disk['id']}"), 404, "disk_not_found")


def test_a_director_cannot_change_another_owners_bake_or_disk(two_directors):
    director, bake, _ = two_directors["a"]
    other, other_bake, other_disk = two_directors["b"]
    assert_error(director("delete", f"/bakes/{other_bake['id']}"), 404, "bake_not_found")
    attach = {"bake_id": bake["id"]}
    stolen = director("post", f"/disks/{other_disk['id']}/attach", json=attach)
    assert_error(stolen, 404, "disk_not_found")
    settings = director("put", f"/bakes/{other_bake['id']}/agent-settings", json={"x": 1})
    assert_error(settings, 404, "bake_not_found")
    assert other("get", f"/bakes/{other_bake['id']}").json["state"] == "baked"


def test_an_admin_sees_every_owners_and_a_viewer_reads_them(two_directors, client, as_token):
    assert len(client.get("/api/v1/bakes").json) == 2
    viewer = as_token("dashboard", "viewer")
    listed = viewer("get", "/bakes").json
    assert len(listed) == 2
    assert_error(viewer("delete", f"/bakes/{listed[0]['id']}"), 403, "forbidden")
    assert client.delete(f"/api/v1/bakes/{listed[0]['id']}").json["state"] == "unbaked"


def test_what_a_token_makes_belongs_to_its_owner(two_directors, as_token):
    director, bake, disk = two_directors["a"]
    colleague = as_token("operator-a", "operator", "a")  # one owner, two tokens
    assert [b["id"] for b in colleague("get", "/bakes").json] == [bake["id"]]
    assert (
        colleague("post", f"/disks/{disk['id']}/attach", json={"bake_id": bake["id"]}).json[
            "bake_id"
        ]
        == bake["id"]
    )


def test_any_token_bakes_any_bakeform_but_only_its_owner_deletes_it(client, bakeform, as_token):
    register(client, "00000001", ip="127.0.0.11")
    director = as_token("director", "cpi")
    assert director("post", "/bakes", json={"bakeform": "raspios"}).status_code == 201
    refused = director("delete", "/bakeforms/raspios")
    assert_error(refused, 403, "forbidden", "another owner")
    replaced = director(
        "put", "/bakeforms/raspios?replace=true", data=b"x", content_type="application/octet-stream"
    )
    assert_error(replaced, 403, "forbidden")


def test_events_name_the_token_that_caused_them(two_directors):
    _, bake, _ = two_directors["a"]
    with database.connection_context():
        actors = {e.actor for e in Event.select().where(Event.bake_id == bake["id"])}
    assert "director-a" in actors
