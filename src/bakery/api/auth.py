"""Bearer-token authentication in front of every API route but the health check."""

from __future__ import annotations

from flask import Flask, Response, g, request

from .. import auth
from .errors import error_response

#: Routes open without a token: the health check, and the metadata a Pi asks about
#: itself (answered by the caller's address, see api/metadata.py).
PUBLIC_ENDPOINTS = {"health.Health", "metadata.AgentSettingsForCaller"}


def require_token() -> Response | None:
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        return _unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
    token = auth.verify_token(presented.strip())
    if token is None:
        return _unauthorized("invalid or revoked token")
    g.token = token
    return None


def _unauthorized(message: str) -> Response:
    response = error_response(401, "unauthorized", message)
    response.headers["WWW-Authenticate"] = 'Bearer realm="bakery"'
    return response


def init_app(app: Flask) -> None:
    app.before_request(require_token)
