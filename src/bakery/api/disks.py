"""/api/v1/disks: sparse disk images, attached to at most one bake."""

from __future__ import annotations

from flask import current_app
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from ..disks import disk_dir
from ..models import Disk
from .fields import ObjectId

blp = Blueprint("disks", __name__, url_prefix="/api/v1/disks", description="Disks")


class DiskSchema(Schema):
    id = fields.String()
    size_mib = fields.Integer()
    bake_id = fields.String(allow_none=True)
    ephemeral = fields.Boolean()
    metadata = fields.Dict()
    export = fields.Method("_export")
    created_at = fields.DateTime()

    def _export(self, disk: Disk) -> str:
        fleet_ = current_app.extensions["bakery.fleet"]
        return f"{fleet_.settings.nfs_server}:{disk_dir(fleet_.settings, disk.id)}"


class DiskCreateSchema(Schema):
    size_mib = fields.Integer(required=True, strict=True, validate=validate.Range(min=1))
    bake_id = ObjectId(load_default=None)
    ephemeral = fields.Boolean(load_default=False)
    metadata = fields.Dict(load_default=None)


class AttachSchema(Schema):
    bake_id = ObjectId(required=True)


class ResizeSchema(Schema):
    size_mib = fields.Integer(required=True, strict=True, validate=validate.Range(min=1))


class DiskQuerySchema(Schema):
    bake_id = ObjectId()


def fleet():
    return current_app.extensions["bakery.fleet"]


@blp.route("")
class Disks(MethodView):
    @blp.arguments(DiskQuerySchema, location="query")
    @blp.response(200, DiskSchema(many=True))
    def get(self, args):
        query = Disk.select().order_by(Disk.created_at)
        if "bake_id" in args:
            query = query.where(Disk.bake == args["bake_id"])
        return list(query)

    @blp.arguments(DiskCreateSchema)
    @blp.response(201, DiskSchema)
    def post(self, args):
        """Create a sparse disk, attached to a bake at once if ``bake_id`` is given."""
        return fleet().create_disk(args.pop("size_mib"), **args)


@blp.route("/<disk_id>")
class DiskResource(MethodView):
    @blp.response(200, DiskSchema)
    def get(self, disk_id):
        return fleet().get_disk(disk_id)

    @blp.response(204)
    def delete(self, disk_id):
        """Delete a detached disk."""
        fleet().delete_disk(disk_id)


@blp.route("/<disk_id>/attach")
class Attach(MethodView):
    @blp.arguments(AttachSchema)
    @blp.response(200, DiskSchema)
    def post(self, args, disk_id):
        return fleet().attach_disk(disk_id, args["bake_id"])


@blp.route("/<disk_id>/detach")
class Detach(MethodView):
    @blp.response(200, DiskSchema)
    def post(self, disk_id):
        return fleet().detach_disk(disk_id)


@blp.route("/<disk_id>/resize")
class Resize(MethodView):
    @blp.arguments(ResizeSchema)
    @blp.response(200, DiskSchema)
    def post(self, args, disk_id):
        """Grow a disk; shrinking is refused."""
        return fleet().resize_disk(disk_id, args["size_mib"])
