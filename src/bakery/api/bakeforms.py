"""/api/v1/bakeforms: upload (streamed), list, show, delete OS images."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Response, request, send_file
from flask.views import MethodView
from marshmallow import Schema, fields

from .auth import HOSTS, WORK, WORK_READ, allow
from .blueprint import Blueprint, body_limit
from .current import current_fleet

if TYPE_CHECKING:
    from ..fleet import Bakeform

blp = Blueprint(
    "bakeforms", __name__, url_prefix="/api/v1/bakeforms", description="OS images (bakeforms)"
)


class BakeformSchema(Schema):
    name = fields.String()
    sha256 = fields.String()
    size = fields.Integer()
    image_size = fields.Integer()
    compression = fields.String()
    clone_method = fields.String()
    cmdline = fields.String()
    created_at = fields.DateTime()
    source_host = fields.String(
        allow_none=True, metadata={"description": "the host that imported it and keeps its upload"}
    )
    hosts = fields.Method(
        "_hosts",
        metadata={"description": "each host's copy: ready, copying, failed or stale"},
    )

    def _hosts(self, bakeform: Any) -> dict[str, str]:
        return current_fleet().bakeform_copies(bakeform)


class UploadQuerySchema(Schema):
    replace = fields.Boolean(load_default=False)


@blp.route("")
class Bakeforms(MethodView):
    @allow(WORK_READ)
    @blp.response(200, BakeformSchema(many=True))
    def get(self) -> list[Bakeform]:
        return current_fleet().list_bakeforms()


@blp.route("/<name>")
class BakeformResource(MethodView):
    @allow(WORK_READ)
    @blp.response(200, BakeformSchema)
    def get(self, name: str) -> Bakeform:
        return current_fleet().get_bakeform(name)

    @allow(WORK)
    @body_limit(None)  # streamed, and held to max_upload_mib below
    @blp.arguments(UploadQuerySchema, location="query")
    @blp.response(201, BakeformSchema)
    @blp.doc(
        requestBody={
            "description": "The image: raw .img, .img.xz or .img.gz (detected from its bytes)",
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    )
    def put(self, args: dict[str, Any], name: str) -> Bakeform:
        """Upload an image as bakeform ``name``; streamed, validated, then extracted.

        An existing name is a conflict unless ``replace=true``."""
        return current_fleet().import_bakeform(
            name, request.stream, replace=args["replace"], length=request.content_length
        )

    @allow(WORK)
    @blp.response(204)
    def delete(self, name: str) -> None:
        """Delete a bakeform no live bake uses."""
        current_fleet().delete_bakeform(name)


@blp.route("/<name>/upload")
class BakeformUpload(MethodView):
    @allow(HOSTS)
    @blp.response(200, description="the upload, as it was received")
    def get(self, name: str) -> Response:
        """The bakeform's upload as received, from the host that imported it: what the
        other hosts sharing the database make their copies from (with their host token)."""
        path = current_fleet().bakeform_upload(name)
        return send_file(path, mimetype="application/octet-stream", conditional=False)
