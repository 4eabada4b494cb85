"""The API's Blueprint: flask-smorest's, with request bodies read so they cannot hurt
the server.

- Every route has a body limit: ``JSON_BODY_LIMIT`` unless it declares its own with
  ``body_limit`` (smaller for metadata; none for an upload, which streams its body and
  holds it to its own limit). Past it the answer is 413, before any of it is read.
- JSON is parsed by webargs with ``json.loads``, which raises RecursionError for deep
  nesting and ValueError for an integer of more than 4300 digits: both are the
  client's 400 here, as is nesting deeper than ``MAX_JSON_DEPTH`` (no Bakery document
  comes near it, and every answer that shows the value would have to walk it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import flask_smorest
from flask import Flask, current_app, g, request
from webargs.flaskparser import FlaskParser

from ..errors import BakeryError, TooLarge

F = TypeVar("F", bound=Callable[..., Any])

KIB = 1024
JSON_BODY_LIMIT = 1024 * KIB
#: Labels a director or an operator puts on bakes, disks and snapshots.
METADATA_LIMIT = 64 * KIB
#: BOSH agent settings: certificates and credentials, a few KiB in practice.
AGENT_SETTINGS_LIMIT = 256 * KIB
#: cloud-init user-data (EC2 allows 16 KiB; scripts with files inline need more).
USER_DATA_LIMIT = 256 * KIB
MAX_JSON_DEPTH = 32

LIMIT_ATTRIBUTE = "_bakery_body_limit"


def body_limit(limit: int | None) -> Callable[[F], F]:
    """Declare the most bytes a view method's request body may have (None: the view
    streams the body and limits it itself). Put it above the other decorators."""

    def declare(view: F) -> F:
        setattr(view, LIMIT_ATTRIBUTE, limit)
        return view

    return declare


def route_handler(endpoint: str, method: str) -> Callable[..., Any] | None:
    """The view method a request to ``endpoint`` with ``method`` runs, where it carries
    what the route declares (roles, body limit); None if there is no such method."""
    view = current_app.view_functions.get(endpoint)
    view_class = getattr(view, "view_class", None)
    if view_class is None:
        return None
    handler: Callable[..., Any] | None = getattr(
        view_class, "get" if method == "HEAD" else method.lower(), None
    )
    return handler


def limit_body() -> None:
    """Hold the request's body to its route's limit: refused at once when its length
    says it is over; a chunked body is read to one byte past the limit at most, and
    refused by the parser if it got there (werkzeug stops reading at a limit without
    saying whether more was sent)."""
    handler = route_handler(request.endpoint or "", request.method)
    limit = getattr(handler, LIMIT_ATTRIBUTE, JSON_BODY_LIMIT)
    if limit is None:
        return
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit, f"of {request.content_length} bytes ")
    g.body_limit = limit
    request.max_content_length = limit + 1


def _too_large(limit: int, size: str = "") -> TooLarge:
    return TooLarge(f"request body {size}is over this route's limit of {limit} bytes")


def nested_deeper_than(value: Any, limit: int) -> bool:
    """True if lists and objects in ``value`` nest more than ``limit`` levels; a loop,
    so the check itself has no recursion limit."""
    pending = [(value, 1)]
    while pending:
        node, depth = pending.pop()
        if isinstance(node, dict):
            children = list(node.values())
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        pending.extend((child, depth + 1) for child in children)
    return False


class BakeryParser(FlaskParser):
    """webargs' Flask parser, answering 400 for JSON that ``json.loads`` chokes on or
    that nests deeper than ``MAX_JSON_DEPTH``."""

    def load_json(self, req: Any, schema: Any) -> Any:
        limit = g.get("body_limit")
        if limit is not None and len(req.get_data(cache=True)) > limit:
            raise _too_large(limit)
        try:
            body = super().load_json(req, schema)
        except RecursionError:
            raise BakeryError("invalid JSON: nested too deeply", code="invalid_json") from None
        except ValueError as exc:  # not a JSONDecodeError: those webargs answers itself
            raise BakeryError(f"invalid JSON: {exc}", code="invalid_json") from None
        if nested_deeper_than(body, MAX_JSON_DEPTH):
            raise BakeryError(
                f"invalid JSON: nested deeper than {MAX_JSON_DEPTH} levels", code="invalid_json"
            )
        return body


class Blueprint(flask_smorest.Blueprint):  # type: ignore[misc]  # flask-smorest is untyped
    """Every resource's blueprint: flask-smorest's with Bakery's parser."""

    ARGUMENTS_PARSER = BakeryParser()


def init_app(app: Flask) -> None:
    app.before_request(limit_body)
