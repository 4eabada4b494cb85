"""Every route but the health check needs a token; every error is JSON."""

from __future__ import annotations

import pytest

from .conftest import assert_error

ROUTES = [
    ("get", "/api/v1/pis"),
    ("post", "/api/v1/pis"),
    ("get", "/api/v1/pis/00000001"),
    ("patch", "/api/v1/pis/00000001"),
    ("delete", "/api/v1/pis/00000001"),
    ("post", "/api/v1/pis/00000001/power"),
    ("get", "/api/v1/pis/00000001/events"),
    ("get", "/api/v1/bakeforms"),
    ("get", "/api/v1/bakeforms/x"),
    ("put", "/api/v1/bakeforms/x"),
    ("delete", "/api/v1/bakeforms/x"),
    ("get", "/api/v1/bakes"),
    ("post", "/api/v1/bakes"),
    ("get", "/api/v1/bakes/0123456789abcdef0123456789abcdef"),
    ("delete", "/api/v1/bakes/0123456789abcdef0123456789abcdef"),
    ("get", "/api/v1/bakes/0123456789abcdef0123456789abcdef/agent-settings"),
    ("put", "/api/v1/bakes/0123456789abcdef0123456789abcdef/agent-settings"),
    ("put", "/api/v1/bakes/0123456789abcdef0123456789abcdef/metadata"),
    ("get", "/api/v1/disks"),
    ("post", "/api/v1/disks"),
    ("get", "/api/v1/disks/x"),
    ("delete", "/api/v1/disks/x"),
    ("post", "/api/v1/disks/x/attach"),
    ("post", "/api/v1/disks/x/detach"),
    ("post", "/api/v1/disks/x/resize"),
    ("get", "/api/v1/tokens"),
    ("post", "/api/v1/tokens"),
    ("delete", "/api/v1/tokens/x"),
    ("get", "/api/v1/openapi.json"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_route_refuses_a_request_without_token(anonymous, method, path):
    response = getattr(anonymous, method)(path, json={})
    assert_error(response, 401, "unauthorized", "token")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "header", ["Bearer nope", "Bearer bky_forged", "Basic dXNlcjpwYXNz", "bky_", "Bearer "]
)
def test_a_wrong_token_is_refused(anonymous, header):
    response = anonymous.get("/api/v1/pis", headers={"Authorization": header})
    assert_error(response, 401, "unauthorized")


def test_health_needs_no_token(anonymous):
    response = anonymous.get("/api/v1/health")
    assert response.status_code == 200
    assert response.json["status"] == "ok"


def test_openapi_document_lists_every_resource(client):
    spec = client.get("/api/v1/openapi.json").json
    paths = set(spec["paths"])
    for path in (
        "/api/v1/pis",
        "/api/v1/bakeforms/{name}",
        "/api/v1/bakes",
        "/api/v1/disks/{disk_id}/attach",
        "/api/v1/tokens",
    ):
        assert path in paths
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


def test_unknown_route_is_a_json_404(client):
    assert_error(client.get("/api/v1/nothing-here"), 404, "not_found")


def test_wrong_method_is_a_json_405(client):
    assert_error(client.patch("/api/v1/bakeforms"), 405, "method_not_allowed")


def test_malformed_json_is_a_json_400(client):
    response = client.post("/api/v1/pis", data="{not json", content_type="application/json")
    assert response.status_code in (400, 422)
    assert response.json["error"]["code"] in ("bad_request", "validation_error")


def test_a_revoked_token_stops_working(client, anonymous):
    created = client.post("/api/v1/tokens", json={"name": "ci"})
    token = created.json["token"]
    assert (
        anonymous.get("/api/v1/pis", headers={"Authorization": f"Bearer {token}"}).status_code
        == 200
    )
    assert client.delete("/api/v1/tokens/ci").status_code == 204
    assert_error(
        anonymous.get("/api/v1/pis", headers={"Authorization": f"Bearer {token}"}),
        401,
        "unauthorized",
    )
