"""/api/v1/tokens: shown once, stored hashed, names unique."""

from __future__ import annotations

from bakery import auth
from bakery.models import ApiToken, database

from .conftest import assert_error


def test_created_token_is_shown_once_and_stored_hashed(client):
    response = client.post("/api/v1/tokens", json={"name": "director"})
    assert response.status_code == 201
    token = response.json["token"]
    assert token.startswith("bky_") and len(token) > 40
    with database.connection_context():
        row = ApiToken.get(ApiToken.name == "director")
        assert row.token_hash == auth.hash_token(token)
        assert token not in (row.token_hash, row.prefix)
    listed = client.get("/api/v1/tokens").json
    assert {t["name"] for t in listed} == {"test-admin", "director"}
    assert all("token" not in t for t in listed)


def test_duplicate_token_name_is_a_conflict(client):
    client.post("/api/v1/tokens", json={"name": "twice"})
    assert_error(client.post("/api/v1/tokens", json={"name": "twice"}), 409, "conflict", "twice")


def test_token_name_is_validated(client):
    for bad in ["", "../x", "a b", "x" * 80, 7]:
        error = assert_error(
            client.post("/api/v1/tokens", json={"name": bad}), 422, "validation_error", "name"
        )
        assert "name" in error["details"]["json"]


def test_revoking_an_unknown_token_is_404(client):
    assert_error(client.delete("/api/v1/tokens/nobody"), 404, "token_not_found", "nobody")


def test_first_start_writes_an_admin_token_only_root_reads(settings, app):
    with database.connection_context():
        ApiToken.delete().execute()
        path = auth.ensure_admin_token(settings)
        assert path and (settings.admin_token_file.stat().st_mode & 0o777) == 0o600
        token = settings.admin_token_file.read_text().strip()
        assert auth.verify_token(token).name == "admin"
        assert auth.ensure_admin_token(settings) is None
