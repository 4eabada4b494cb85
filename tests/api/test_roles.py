"""Roles: every route of the OpenAPI document against every role. ``ACCESS`` is the one
table of who may call what; a route the document has and the table lacks fails the first
test, so a new route is never open (or closed) by accident."""

from __future__ import annotations

import re

import pytest

from bakery import auth
from bakery.identifiers import ROLES
from bakery.models import database

from .conftest import assert_error

ADMIN = {"admin"}
FLEET = {"admin", "operator"}
FLEET_READ = {"admin", "operator", "viewer"}
WORK = {"admin", "operator", "cpi"}
WORK_READ = {"admin", "operator", "cpi", "viewer"}
EVERYONE = set(ROLES)

#: (method, OpenAPI path) -> the roles that may call it.
ACCESS: dict[tuple[str, str], set[str]] = {
    ("get", "/api/v1/pis"): FLEET_READ,
    ("post", "/api/v1/pis"): FLEET,
    ("get", "/api/v1/pis/{serial}"): FLEET_READ,
    ("patch", "/api/v1/pis/{serial}"): FLEET,
    ("delete", "/api/v1/pis/{serial}"): FLEET,
    ("post", "/api/v1/pis/{serial}/power"): FLEET,
    ("get", "/api/v1/pis/{serial}/console"): FLEET_READ,
    ("get", "/api/v1/pis/{serial}/events"): FLEET_READ,
    ("get", "/api/v1/bakeforms"): WORK_READ,
    ("get", "/api/v1/bakeforms/{name}"): WORK_READ,
    ("put", "/api/v1/bakeforms/{name}"): WORK,
    ("delete", "/api/v1/bakeforms/{name}"): WORK,
    ("get", "/api/v1/bakeforms/{name}/upload"): {"admin", "host"},
    ("get", "/api/v1/bakes"): WORK_READ,
    ("post", "/api/v1/bakes"): WORK,
    ("get", "/api/v1/bakes/{bake_id}"): WORK_READ,
    ("delete", "/api/v1/bakes/{bake_id}"): WORK,
    ("post", "/api/v1/bakes/{bake_id}/power"): WORK,
    ("get", "/api/v1/bakes/{bake_id}/agent-settings"): WORK_READ,
    ("put", "/api/v1/bakes/{bake_id}/agent-settings"): WORK,
    ("put", "/api/v1/bakes/{bake_id}/metadata"): WORK,
    ("get", "/api/v1/disks"): WORK_READ,
    ("post", "/api/v1/disks"): WORK,
    ("get", "/api/v1/disks/{disk_id}"): WORK_READ,
    ("delete", "/api/v1/disks/{disk_id}"): WORK,
    ("post", "/api/v1/disks/{disk_id}/attach"): WORK,
    ("post", "/api/v1/disks/{disk_id}/detach"): WORK,
    ("post", "/api/v1/disks/{disk_id}/resize"): WORK,
    ("put", "/api/v1/disks/{disk_id}/metadata"): WORK,
    ("get", "/api/v1/disks/{disk_id}/snapshots"): WORK_READ,
    ("post", "/api/v1/disks/{disk_id}/snapshots"): WORK,
    ("get", "/api/v1/snapshots/{snapshot_id}"): WORK_READ,
    ("delete", "/api/v1/snapshots/{snapshot_id}"): WORK,
    ("get", "/api/v1/tokens"): ADMIN,
    ("post", "/api/v1/tokens"): ADMIN,
    ("delete", "/api/v1/tokens/{name}"): ADMIN,
    ("get", "/api/v1/hosts"): FLEET_READ,
    # Prometheus metrics: the fleet's readers (a monitoring user's viewer token)
    ("get", "/metrics"): FLEET_READ,
    # open to all, token or not: the Pi's own metadata (its bake's secret) and health
    ("get", "/api/v1/metadata/agent-settings"): EVERYONE,
    ("post", "/api/v1/metadata/boot"): EVERYONE,
    ("get", "/api/v1/health"): EVERYONE,
}
#: Values for the path parameters: well formed, naming nothing (so nothing is changed).
PARAMETERS = {"serial": "0000dead", "bake_id": "0" * 32, "disk_id": "0" * 32,
              "snapshot_id": "0" * 32, "name": "nothing-here"}  # fmt: skip


@pytest.fixture
def tokens(app) -> dict[str, str]:
    """A token of every role."""
    with database.connection_context():
        return {role: auth.create_token(f"a-{role}", role=role)[1] for role in ROLES}


@pytest.fixture
def routes(client) -> list[tuple[str, str]]:
    document = client.get("/api/v1/openapi.json").json
    methods = ("get", "put", "post", "patch", "delete")
    return [
        (method, path)
        for path, operations in document["paths"].items()
        for method in operations
        if method in methods
    ]


def test_every_route_of_the_document_is_in_the_access_table(routes):
    assert sorted(routes) == sorted(ACCESS)


@pytest.mark.parametrize("role", ROLES)
def test_each_role_is_refused_exactly_the_routes_it_may_not_call(anonymous, tokens, routes, role):
    headers = {"Authorization": f"Bearer {tokens[role]}"}
    wrong = []
    for method, path in routes:
        url = re.sub(r"{(\w+)}", lambda m: PARAMETERS[m[1]], path)
        response = getattr(anonymous, method)(url, json={}, headers=headers)
        allowed = role in ACCESS[(method, path)]
        refused = response.status_code == 403
        if allowed == refused or response.status_code == 401:
            wrong.append(f"{method.upper()} {path}: {response.status_code}")
        if refused:
            assert_error(response, 403, "forbidden", role)
    assert not wrong, f"role {role}: " + ", ".join(wrong)


@pytest.mark.parametrize("role", ROLES)
def test_every_role_reads_the_api_document(anonymous, tokens, role):
    headers = {"Authorization": f"Bearer {tokens[role]}"}
    assert anonymous.get("/api/v1/openapi.json", headers=headers).status_code == 200


def test_a_new_token_reads_only_unless_given_a_role(client, anonymous):
    made = client.post("/api/v1/tokens", json={"name": "dashboard"}).json
    assert (made["role"], made["owner"]) == ("viewer", "dashboard")
    headers = {"Authorization": f"Bearer {made['token']}"}
    assert anonymous.get("/api/v1/pis", headers=headers).status_code == 200
    refused = anonymous.post("/api/v1/pis", json={"serial": "00000009"}, headers=headers)
    assert_error(refused, 403, "forbidden", "viewer")


def test_the_director_token_cannot_mint_tokens_or_register_pis(client, anonymous):
    """The finding: the token the BOSH director held could make tokens and register a Pi
    whose power driver runs a program, which is root on the host."""
    director = client.post("/api/v1/tokens", json={"name": "director", "role": "cpi"}).json
    headers = {"Authorization": f"Bearer {director['token']}"}
    minted = anonymous.post(
        "/api/v1/tokens", json={"name": "mine", "role": "admin"}, headers=headers
    )
    assert_error(minted, 403, "forbidden")
    registered = anonymous.post(
        "/api/v1/pis",
        json={"serial": "00000009", "power_driver": "ppi", "power_settings": {"path": "/bin/sh"}},
        headers=headers,
    )
    assert_error(registered, 403, "forbidden")


def test_a_role_that_does_not_exist_is_refused_naming_the_field(client):
    error = assert_error(
        client.post("/api/v1/tokens", json={"name": "x", "role": "root"}), 422, "validation_error"
    )
    assert "role" in error["details"]["json"]
