"""Bearer tokens and roles in front of every route.

Each view method declares the roles that may call it (``@allow(WORK)``); a route that
declares none refuses every token, so a new route cannot be open by omission. A request's
token becomes the fleet's actor for that request (``fleet.actors``): it decides whose
bakes and disks the request sees and is named in the events it causes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, Response, g, request

from .. import auth, identifiers
from ..fleet import Actor, acting_as
from .blueprint import route_handler
from .errors import error_response

F = TypeVar("F", bound=Callable[..., Any])

#: Routes open without a token: the health check, and the metadata a Pi asks about
#: itself (it shows its bake's own secret instead, see api/metadata.py).
PUBLIC_ENDPOINTS = {"health.Health", "metadata.AgentSettingsForCaller", "metadata.BootReport"}
#: flask-smorest's own routes (the OpenAPI document): any valid token reads them.
DOC_ENDPOINTS = {"api-docs.openapi_json"}

ADMIN = ("admin",)
#: The Pis themselves: register, describe, power, delete.
FLEET = ("admin", "operator")
FLEET_READ = ("admin", "operator", "viewer")
#: What the BOSH CPI calls: bakeforms (stemcells), bakes (VMs), disks, snapshots.
WORK = ("admin", "operator", "cpi")
WORK_READ = ("admin", "operator", "cpi", "viewer")
ANY_ROLE = identifiers.ROLES
#: What another Bakery host sharing the database fetches from this one (its host token).
HOSTS = ("admin", "host")

ROLES_ATTRIBUTE = "_bakery_roles"


def allow(roles: tuple[str, ...]) -> Callable[[F], F]:
    """Declare the roles that may call a view method (put it above the other decorators):
    one of the groups below, so a route's access reads as what it is for."""

    def declare(view: F) -> F:
        setattr(view, ROLES_ATTRIBUTE, roles)
        return view

    return declare


def declared_roles(endpoint: str, method: str) -> tuple[str, ...] | None:
    """The roles a route allows; None where the endpoint has no such method (Flask then
    answers 405, or OPTIONS by itself)."""
    if endpoint in DOC_ENDPOINTS:
        return ANY_ROLE
    handler = route_handler(endpoint, method)
    if handler is None:
        return None
    roles: tuple[str, ...] = getattr(handler, ROLES_ATTRIBUTE, ())
    return roles


#: Blueprints whose pages sign in with a session cookie instead (bakery.web.session).
SESSION_BLUEPRINTS = {"web"}


def require_token() -> Response | None:
    if request.endpoint in PUBLIC_ENDPOINTS or request.blueprint in SESSION_BLUEPRINTS:
        return None
    if request.url_rule is None and not request.path.startswith("/api/"):
        return None  # no such page: a 404 for a browser, not a token's 401
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        return _unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
    token = auth.verify_token(presented.strip())
    if token is None:
        return _unauthorized("invalid or revoked token")
    roles = declared_roles(request.endpoint or "", request.method)
    if roles is not None and token.role not in roles:
        allowed = ", ".join(roles) or "no token"
        message = f"this route is for {allowed}; token {token.name} has role {token.role}"
        return error_response(403, "forbidden", message)
    act_for(token)
    return None


def act_for(token: auth.ApiToken) -> None:
    """Make ``token`` the request's: the fleet acts for it until the request ends."""
    g.token = token
    g.acting = acting_as(Actor(token=token.name, role=token.role, owner=token.owner))
    g.acting.__enter__()


def _stop_acting(_exc: BaseException | None) -> None:
    acting = g.pop("acting", None)
    if acting is not None:
        acting.__exit__(None, None, None)


def _unauthorized(message: str) -> Response:
    response = error_response(401, "unauthorized", message)
    response.headers["WWW-Authenticate"] = 'Bearer realm="bakery"'
    return response


def init_app(app: Flask) -> None:
    app.before_request(require_token)
    app.teardown_request(_stop_acting)
