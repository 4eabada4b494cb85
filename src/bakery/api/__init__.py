"""The REST API under /api/v1: one blueprint per resource, JSON errors, token auth."""

from __future__ import annotations

from flask import Flask, Response
from flask_smorest import Api
from werkzeug.exceptions import HTTPException

from . import (
    auth,
    bakeforms,
    bakes,
    blueprint,
    disks,
    errors,
    health,
    hosts,
    metadata,
    metrics,
    pis,
    tokens,
)

BLUEPRINTS = [
    health.blp,
    metadata.blp,
    bakeforms.blp,
    pis.blp,
    bakes.blp,
    disks.blp,
    disks.snapshots,
    tokens.blp,
    hosts.blp,
    metrics.blp,
]


class BakeryApi(Api):  # type: ignore[misc]  # flask-smorest has no type information: Api is Any
    """flask-smorest's Api with Bakery's error format instead of its own."""

    def handle_http_exception(self, error: HTTPException) -> Response:
        return errors.handle_http_exception(error)


def init_app(app: Flask) -> None:
    app.config.update(
        API_TITLE="Bakery",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api/v1",
        OPENAPI_JSON_PATH="openapi.json",
        API_SPEC_OPTIONS={
            "security": [{"bearerAuth": []}],
            "components": {"securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}}},
        },
    )
    api = BakeryApi(app)
    for resource in BLUEPRINTS:
        api.register_blueprint(resource)
    errors.init_app(app)
    metrics.init_app(app)
    auth.init_app(app)
    blueprint.init_app(app)
