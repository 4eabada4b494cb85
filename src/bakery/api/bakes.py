"""/api/v1/bakes: bake a bakeform onto a Pi, show it, unbake it, hand it settings."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask.views import MethodView
from marshmallow import Schema, fields, validate

from .auth import WORK, WORK_READ, allow
from .blueprint import (
    AGENT_SETTINGS_LIMIT,
    METADATA_LIMIT,
    USER_DATA_LIMIT,
    Blueprint,
    body_limit,
)
from .current import current_fleet
from .fields import BootProtocol, Hostname, JsonObject, Labels, Name, ObjectId, Serial
from .pis import PowerResultSchema, PowerSchema, power_answer

if TYPE_CHECKING:
    from ..fleet import Bake

blp = Blueprint("bakes", __name__, url_prefix="/api/v1/bakes", description="Bakes (BOSH VMs)")


class BakeSchema(Schema):
    id = fields.String()
    serial = fields.Function(lambda bake: bake.pi.serial)
    ip = fields.Function(lambda bake: bake.pi.last_ip)
    mac = fields.Function(lambda bake: bake.pi.mac)
    bakeform = fields.String(attribute="bakeform_name")
    state = fields.String()
    hostname = fields.String()
    metadata = fields.Dict()
    error = fields.String()
    root_export = fields.Method("_root_export")
    disks = fields.Method("_disks")
    boot_protocol = fields.String()
    host = fields.String(attribute="host_id", metadata={"description": "the host that made it"})
    created_at = fields.DateTime()
    finished_at = fields.DateTime(allow_none=True)

    def _root_export(self, bake: Any) -> str:
        return current_fleet().root_export(bake)

    def _disks(self, bake: Any) -> list[str]:
        return sorted(disk.id for disk in bake.disks)


class BakeRequestSchema(Schema):
    bakeform = Name(required=True)
    serial = Serial(load_default=None)
    labels = Labels(load_default=list)
    model = fields.String(load_default=None, validate=validate.Length(1, 16))
    hostname = Hostname(load_default=None)
    agent_settings = JsonObject(AGENT_SETTINGS_LIMIT, load_default=None)
    metadata = JsonObject(METADATA_LIMIT, load_default=None)
    disk_ids = fields.List(ObjectId(), load_default=list)
    near_disks = fields.List(
        ObjectId(),
        load_default=list,
        metadata={"description": "disks the bake will be given: made on their host if it can"},
    )
    boot_protocol = BootProtocol(
        "tftp, or http for a signed boot.img; default the Pi's", load_default=None
    )
    power_on = fields.Boolean(
        load_default=True, metadata={"description": "false: leave the Pi off until /power"}
    )
    user_data = fields.String(
        load_default=None,
        load_only=True,
        validate=validate.Length(max=USER_DATA_LIMIT),
        metadata={
            "description": "cloud-init user-data (#cloud-config YAML or a #! script) for the "
            "root's NoCloud seed; write-only"
        },
    )


class BakeQuerySchema(Schema):
    all = fields.Boolean(load_default=False, metadata={"description": "include unbaked bakes"})
    serial = Serial()


class SettingsSchema(Schema):
    """Any JSON object (for BOSH: the agent settings)."""

    class Meta:
        unknown = "include"


@blp.route("")
class Bakes(MethodView):
    @allow(WORK_READ)
    @blp.arguments(BakeQuerySchema, location="query")
    @blp.response(200, BakeSchema(many=True))
    def get(self, args: dict[str, Any]) -> list[Bake]:
        """Live bakes (the oven); ``all=true`` adds the unbaked history."""
        return current_fleet().list_bakes(include_finished=args["all"], serial=args.get("serial"))

    @allow(WORK)
    @blp.arguments(BakeRequestSchema)
    @blp.response(201, BakeSchema)
    def post(self, args: dict[str, Any]) -> Bake:
        """Bake a bakeform onto a free Pi (any, a given serial, or one with all the labels).

        Answers once the Pi is powered on; 503 ``no_pi_available`` when none is free."""
        return current_fleet().bake(args.pop("bakeform"), **args)


@blp.route("/<bake_id>")
class BakeResource(MethodView):
    @allow(WORK_READ)
    @blp.response(200, BakeSchema)
    def get(self, bake_id: str) -> Bake:
        return current_fleet().get_bake(bake_id)

    @allow(WORK)
    @blp.response(200, BakeSchema)
    def delete(self, bake_id: str) -> Bake:
        """Unbake: power off, unexport, delete the root and the bake's own disks."""
        return current_fleet().unbake(bake_id)


@blp.route("/<bake_id>/power")
class BakePower(MethodView):
    @allow(WORK)
    @blp.arguments(PowerSchema)
    @blp.response(200, PowerResultSchema)
    def post(self, args: dict[str, Any], bake_id: str) -> dict[str, str]:
        """Power the bake's Pi on or off, or power-cycle it (BOSH reboot_vm)."""
        result = current_fleet().power_bake(bake_id, args["action"])
        return power_answer(current_fleet().get_bake(bake_id).pi.serial, args["action"], result)


@blp.route("/<bake_id>/agent-settings")
class AgentSettings(MethodView):
    @allow(WORK_READ)
    @blp.response(200, description="a JSON object")
    def get(self, bake_id: str) -> dict[str, Any]:
        """The bake's agent settings as its Pi gets them, secrets hidden: they are
        write-only (the Pi reads them whole from its root, or from /metadata)."""
        return current_fleet().shown_agent_settings(bake_id)

    @allow(WORK)
    @body_limit(AGENT_SETTINGS_LIMIT)
    @blp.arguments(SettingsSchema)
    @blp.response(200, description="a JSON object")
    def put(self, settings: dict[str, Any], bake_id: str) -> dict[str, Any]:
        """Replace the bake's agent settings; the answer hides their secrets."""
        current_fleet().set_agent_settings(bake_id, settings)
        return current_fleet().shown_agent_settings(bake_id)


@blp.route("/<bake_id>/metadata")
class Metadata(MethodView):
    @allow(WORK)
    @body_limit(METADATA_LIMIT)
    @blp.arguments(SettingsSchema)
    @blp.response(200, BakeSchema)
    def put(self, metadata: dict[str, Any], bake_id: str) -> Bake:
        """Replace the bake's metadata (BOSH set_vm_metadata)."""
        return current_fleet().set_bake_metadata(bake_id, metadata)
