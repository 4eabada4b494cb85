"""Every error the API returns is JSON ``{"error": {"code", "message", "details"}}``.

Users see a stable machine code, one human sentence and, for validation errors,
the fields at fault. Tracebacks go to the log, never to the client."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from ..errors import BakeryError

log = logging.getLogger(__name__)

HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    411: "length_required",
    413: "too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    417: "expectation_failed",
    422: "validation_error",
    431: "headers_too_large",
    500: "internal_error",
    501: "not_supported",
    503: "unavailable",
}


def error_response(status: int, code: str, message: str, details: Any = None) -> Response:
    response = jsonify({"error": {"code": code, "message": message, "details": details}})
    response.status_code = status
    return response


def field_messages(messages: dict[str, Any]) -> str:
    """'field: problem' for the first problems webargs found, naming each field."""
    parts = []
    for location in messages.values():
        if not isinstance(location, dict):
            parts.extend(_flatten(location))
            continue
        for field, problems in location.items():
            text = problems if isinstance(problems, str) else "; ".join(_flatten(problems))
            parts.append(f"{field}: {text}")
    return ", ".join(parts[:5])


def _flatten(problems: Any) -> list[str]:
    if isinstance(problems, dict):
        return [f"{k}: {'; '.join(_flatten(v))}" for k, v in problems.items()]
    if isinstance(problems, list):
        return [p if isinstance(p, str) else "; ".join(_flatten(p)) for p in problems]
    return [str(problems)]


def handle_http_exception(error: HTTPException) -> Response:
    status = error.code or 500
    data = getattr(error, "data", None) or {}
    messages = data.get("messages")
    if messages:
        return error_response(
            status,
            HTTP_CODES.get(status, "error"),
            f"invalid input: {field_messages(messages)}",
            messages,
        )
    message = data.get("message") or error.description or error.name
    return error_response(status, HTTP_CODES.get(status, "error"), message)


def handle_bakery_error(error: BakeryError) -> Response:
    return error_response(error.status, error.code, error.message, error.details)


def handle_unexpected(error: Exception) -> Response:
    if isinstance(error, HTTPException):
        return handle_http_exception(error)
    log.exception("unexpected error")
    return error_response(500, "internal_error", "internal error; the server log has details")


def init_app(app: Flask) -> None:
    app.register_error_handler(BakeryError, handle_bakery_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(Exception, handle_unexpected)
