"""/api/v1/disks: sparse disk images, attached to at most one bake."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask.views import MethodView
from marshmallow import Schema, fields, validate

from ..fleet import DISK_FILESYSTEMS
from .auth import WORK, WORK_READ, allow
from .blueprint import METADATA_LIMIT, Blueprint, body_limit
from .current import current_fleet
from .fields import JsonObject, MountPoint, ObjectId

if TYPE_CHECKING:
    from ..fleet import Disk, Snapshot

blp = Blueprint("disks", __name__, url_prefix="/api/v1/disks", description="Disks")


class DiskSchema(Schema):
    id = fields.String()
    size_mib = fields.Integer()
    bake_id = fields.String(allow_none=True)
    ephemeral = fields.Boolean()
    filesystem = fields.String(allow_none=True)
    mount_point = fields.String(allow_none=True)
    metadata = fields.Dict()
    host = fields.String(allow_none=True, metadata={"description": "the host holding its image"})
    export = fields.Method("_export")
    device = fields.Method(
        "_device", metadata={"description": "the block device it is on its Pi once attached"}
    )
    created_at = fields.DateTime()

    def _export(self, disk: Any) -> str:
        return current_fleet().disk_export(disk)

    def _device(self, disk: Any) -> str:
        return current_fleet().disk_device(disk.id)


MOUNT_POINT_HELP = (
    "where the disk agent mounts the disk on its Pi at boot, before containerd or k3s start; "
    "needs a filesystem"
)


class DiskCreateSchema(Schema):
    size_mib = fields.Integer(required=True, strict=True, validate=validate.Range(min=1))
    bake_id = ObjectId(load_default=None)
    near = ObjectId(
        load_default=None,
        metadata={"description": "a bake the disk is for: made on its host, not attached"},
    )
    ephemeral = fields.Boolean(load_default=False)
    metadata = JsonObject(METADATA_LIMIT, load_default=None)
    filesystem = fields.String(
        load_default=None,
        validate=validate.OneOf(DISK_FILESYSTEMS),
        metadata={"description": "made on the disk by Bakery at creation; none leaves it raw"},
    )
    mount_point = MountPoint(load_default=None, metadata={"description": MOUNT_POINT_HELP})
    partitioned = fields.Boolean(
        load_default=False,
        metadata={
            "description": "made with one Linux partition spanning it (MBR), unformatted: "
            "what the BOSH agent partitions a persistent disk into and then formats"
        },
    )


class AttachSchema(Schema):
    bake_id = ObjectId(required=True)
    mount_point = MountPoint(load_default=None, metadata={"description": MOUNT_POINT_HELP})


class ResizeSchema(Schema):
    size_mib = fields.Integer(required=True, strict=True, validate=validate.Range(min=1))


class SnapshotSchema(Schema):
    id = fields.String()
    disk_id = fields.String()
    size_mib = fields.Integer()
    metadata = fields.Dict()
    created_at = fields.DateTime()


class MetadataSchema(Schema):
    """Any JSON object of labels (BOSH set_disk_metadata, snapshot metadata)."""

    class Meta:
        unknown = "include"


class DiskQuerySchema(Schema):
    bake_id = ObjectId()


@blp.route("")
class Disks(MethodView):
    @allow(WORK_READ)
    @blp.arguments(DiskQuerySchema, location="query")
    @blp.response(200, DiskSchema(many=True))
    def get(self, args: dict[str, Any]) -> list[Disk]:
        return current_fleet().list_disks(args.get("bake_id"))

    @allow(WORK)
    @blp.arguments(DiskCreateSchema)
    @blp.response(201, DiskSchema)
    def post(self, args: dict[str, Any]) -> Disk:
        """Create a sparse disk, attached to a bake at once if ``bake_id`` is given."""
        return current_fleet().create_disk(args.pop("size_mib"), **args)


@blp.route("/<disk_id>")
class DiskResource(MethodView):
    @allow(WORK_READ)
    @blp.response(200, DiskSchema)
    def get(self, disk_id: str) -> Disk:
        return current_fleet().get_disk(disk_id)

    @allow(WORK)
    @blp.response(204)
    def delete(self, disk_id: str) -> None:
        """Delete a detached disk."""
        current_fleet().delete_disk(disk_id)


@blp.route("/<disk_id>/attach")
class Attach(MethodView):
    @allow(WORK)
    @blp.arguments(AttachSchema)
    @blp.response(200, DiskSchema)
    def post(self, args: dict[str, Any], disk_id: str) -> Disk:
        """Attach a detached disk to a bake (or give an attached one a new mount point)."""
        return current_fleet().attach_disk(disk_id, **args)


@blp.route("/<disk_id>/detach")
class Detach(MethodView):
    @allow(WORK)
    @blp.response(200, DiskSchema)
    def post(self, disk_id: str) -> Disk:
        return current_fleet().detach_disk(disk_id)


@blp.route("/<disk_id>/resize")
class Resize(MethodView):
    @allow(WORK)
    @blp.arguments(ResizeSchema)
    @blp.response(200, DiskSchema)
    def post(self, args: dict[str, Any], disk_id: str) -> Disk:
        """Grow a disk; shrinking is refused."""
        return current_fleet().resize_disk(disk_id, args["size_mib"])


@blp.route("/<disk_id>/metadata")
class DiskMetadata(MethodView):
    @allow(WORK)
    @body_limit(METADATA_LIMIT)
    @blp.arguments(MetadataSchema)
    @blp.response(200, DiskSchema)
    def put(self, metadata: dict[str, Any], disk_id: str) -> Disk:
        """Replace the disk's metadata (BOSH set_disk_metadata)."""
        return current_fleet().set_disk_metadata(disk_id, metadata)


@blp.route("/<disk_id>/snapshots")
class DiskSnapshots(MethodView):
    @allow(WORK_READ)
    @blp.response(200, SnapshotSchema(many=True))
    def get(self, disk_id: str) -> list[Snapshot]:
        return current_fleet().list_snapshots(disk_id)

    @allow(WORK)
    @body_limit(METADATA_LIMIT)
    @blp.arguments(MetadataSchema)
    @blp.response(201, SnapshotSchema)
    def post(self, metadata: dict[str, Any], disk_id: str) -> Snapshot:
        """Take a copy-on-write snapshot; 501 where the data dir has no reflinks."""
        return current_fleet().snapshot_disk(disk_id, metadata)


snapshots = Blueprint(
    "snapshots", __name__, url_prefix="/api/v1/snapshots", description="Disk snapshots"
)


@snapshots.route("/<snapshot_id>")
class SnapshotResource(MethodView):
    @allow(WORK_READ)
    @snapshots.response(200, SnapshotSchema)
    def get(self, snapshot_id: str) -> Snapshot:
        return current_fleet().get_snapshot(snapshot_id)

    @allow(WORK)
    @snapshots.response(204)
    def delete(self, snapshot_id: str) -> None:
        current_fleet().delete_snapshot(snapshot_id)
