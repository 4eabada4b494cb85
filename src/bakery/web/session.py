"""Signing in to the dashboard with an API token, and what a signed-in page may do.

The session is Flask's signed cookie (HttpOnly, SameSite=Lax, Secure over TLS). It holds
the token's hash, never the token: each request finds the token by it, so revoking a
token ends its sessions at once, and the token's role decides every action, as it does
for the API (the same role groups, ``api.auth``). Every POST carries the session's CSRF
token (a form field, or the ``X-CSRF-Token`` header for the upload), checked before
anything else: another site's form cannot act for a signed-in operator, nor sign them in
as someone else.
"""

from __future__ import annotations

import functools
import hmac
import secrets
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import current_app, g, redirect, render_template, request, session, url_for
from werkzeug.exceptions import Forbidden
from werkzeug.wrappers import Response

from .. import auth
from ..api.auth import FLEET, FLEET_READ, WORK, WORK_READ, act_for
from ..api.errors import error_response
from .blueprint import SESSION_LIFETIME, blp

F = TypeVar("F", bound=Callable[..., Any])

TOKEN_KEY = "token_digest"
CSRF_KEY = "csrf"
SIGNED_IN_KEY = "signed_in_at"
#: Where ``requires`` notes the group of a view: a view without one is refused to all.
GROUP_ATTRIBUTE = "_bakery_web_group"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
FORM_TYPE = "application/x-www-form-urlencoded"
LIFETIME_SECONDS = SESSION_LIFETIME.total_seconds()
#: Pages open before signing in (or after: signing out needs only the CSRF token).
OPEN_ENDPOINTS = {"web.sign_in", "web.sign_out", "web.static"}
#: The role groups pages and buttons name (those of the API routes they stand for).
ROLE_GROUPS = {"fleet": FLEET, "fleet_read": FLEET_READ, "work": WORK, "work_read": WORK_READ}


def csrf_token() -> str:
    """This session's CSRF token, made on first use."""
    if CSRF_KEY not in session:
        session[CSRF_KEY] = secrets.token_urlsafe(32)
    token: str = session[CSRF_KEY]
    return token


def can(group: str) -> bool:
    """Whether the signed-in token's role may do what the group ``group`` is for."""
    token = g.get("token")
    return token is not None and token.role in ROLE_GROUPS[group]


def requires(group: str) -> Callable[[F], F]:
    """Refuse a view to a token whose role is not in ``group`` (403, naming both)."""

    def wrap(view: F) -> F:
        @functools.wraps(view)
        def checked(*args: Any, **kwargs: Any) -> Any:
            if not can(group):
                allowed = ", ".join(ROLE_GROUPS[group])
                raise Forbidden(f"this is for {allowed}; token {g.token.name} is {g.token.role}")
            return view(*args, **kwargs)

        setattr(checked, GROUP_ATTRIBUTE, group)
        return checked  # type: ignore[return-value]

    return wrap


@blp.app_context_processor
def _template_helpers() -> dict[str, Any]:
    return {"csrf_token": csrf_token, "can": can, "signed_in": g.get("token")}


@blp.before_request
def _require_session() -> Response | tuple[Response | str, int] | None:
    """A live token behind an unexpired session, then CSRF on anything that changes
    something; sign-in itself is CSRF-checked too. A view that declares no role group
    (``requires``) is refused, so a new page cannot be open by omission."""
    if request.endpoint in OPEN_ENDPOINTS:
        if request.method not in SAFE_METHODS:
            _check_csrf()
        return None
    token = _session_token()
    if token is None:
        session.pop(TOKEN_KEY, None)
        return _to_sign_in()
    if request.method not in SAFE_METHODS:
        _check_csrf()
    view = current_app.view_functions.get(request.endpoint or "")
    if view is not None and getattr(view, GROUP_ATTRIBUTE, None) is None:
        raise Forbidden("this page declares no role that may open it")
    act_for(token)
    return None


def _session_token() -> auth.ApiToken | None:
    """The session's token: None if there is none, it was revoked, or the sign-in is
    older than ``SESSION_LIFETIME`` (however busy the session has been since)."""
    signed_in = session.get(SIGNED_IN_KEY)
    if not isinstance(signed_in, (int, float)) or time.time() - signed_in > LIFETIME_SECONDS:
        return None
    return auth.token_by_digest(session.get(TOKEN_KEY, ""))


def _to_sign_in() -> Response | tuple[Response | str, int]:
    """Back to sign-in, to return where the user was: the page for a GET, the page the
    form was on for a POST; the upload's script gets the API's JSON 401."""
    if request.method in SAFE_METHODS:
        return redirect(url_for("web.sign_in", next=request.full_path.rstrip("?")))
    if request.mimetype != FORM_TYPE:
        return error_response(401, "unauthorized", "signed out: sign in again"), 401
    back = local_path(request.form.get("back"), url_for("web.fleet_grid"))
    return redirect(url_for("web.sign_in", next=back))


def _check_csrf() -> None:
    """The session's CSRF token, from the form (URL-encoded forms only: a multipart body
    is never parsed here) or the ``X-CSRF-Token`` header (the upload)."""
    presented = request.headers.get("X-CSRF-Token", "")
    if not presented and request.mimetype == FORM_TYPE:
        presented = request.form.get("csrf_token", "")
    expected = session.get(CSRF_KEY, "")
    if not expected or not hmac.compare_digest(presented.encode(), expected.encode()):
        raise Forbidden("this form has expired or came from another site: reload the page")


def local_path(target: str | None, default: str) -> str:
    """``target`` if it is a path on this site ("/pis/x"), else ``default``: a sign-in
    link cannot send anyone elsewhere ("//evil.example", "https://...", "/\\\\evil")."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return default
    return target


@blp.route("/sign-in", methods=["GET", "POST"])
def sign_in() -> Response | tuple[str, int] | str:
    """The token form; a valid token starts a session and goes where it was headed."""
    target = local_path(request.args.get("next"), url_for("web.fleet_grid"))
    if request.method == "GET":
        return render_template("sign_in.html", target=target)
    token = auth.verify_token(request.form.get("token", "").strip())
    if token is None:
        page = render_template("sign_in.html", target=target, error="invalid or revoked token")
        return page, 401
    session.clear()
    session[TOKEN_KEY] = token.token_hash
    session[CSRF_KEY] = secrets.token_urlsafe(32)
    session[SIGNED_IN_KEY] = time.time()
    session.permanent = True
    return redirect(target)


@blp.route("/sign-out", methods=["POST"])
def sign_out() -> Response:
    session.clear()
    return redirect(url_for("web.sign_in"))
