"""The dashboard's blueprint: its templates and static files, HTML error pages (the API's
stay JSON), the headers that keep its pages to themselves, and the session cookie."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from flask import Blueprint, Flask, Response, render_template
from werkzeug.exceptions import HTTPException

from .. import auth
from ..config import Settings
from ..errors import BakeryError
from ..fleet import utcnow
from ..netboot.bootfiles import human_size

log = logging.getLogger(__name__)

blp = Blueprint("web", __name__, template_folder="templates", static_folder="static")

#: How long a sign-in lasts from the moment of signing in, whatever is done meanwhile;
#: the token's revocation ends it at once.
SESSION_LIFETIME = timedelta(hours=12)
#: Scripts, styles and images from this server only, no frames, no plug-ins: a message a
#: Pi put on its timeline can never run as script, and nothing comes from a CDN.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def configure_sessions(app: Flask, settings: Settings) -> None:
    """Sign the session cookie with the host's key; keep it from scripts and other sites."""
    app.secret_key = auth.session_key(settings)
    app.config.update(
        SESSION_COOKIE_NAME="bakery_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=bool(settings.tls_cert_file),
        PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,
        SESSION_REFRESH_EACH_REQUEST=False,
    )


@blp.after_request
def _protect(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    if response.mimetype == "text/html":
        response.headers["Cache-Control"] = "no-store"
    return response


def error_page(status: int, message: str) -> tuple[str, int]:
    return render_template("error.html", status=status, message=message), status


@blp.errorhandler(BakeryError)
def _bakery_error(error: BakeryError) -> tuple[str, int]:
    return error_page(error.status, error.message)


@blp.errorhandler(HTTPException)
def _http_error(error: HTTPException) -> tuple[str, int]:
    return error_page(error.code or 500, error.description or error.name)


@blp.errorhandler(Exception)
def _unexpected(error: Exception) -> tuple[str, int]:
    log.exception("unexpected error on a dashboard page")
    return error_page(500, "internal error; the server log has details")


blp.add_app_template_filter(human_size, "size")


@blp.app_template_filter("ago")
def ago(moment: datetime | None, now: datetime | None = None) -> str:
    """'12 s ago', '5 min ago', '3 h ago', '2 d ago'; 'never' for None."""
    if moment is None:
        return "never"
    seconds = max(0, int(((now or utcnow()) - moment).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"
