"""/api/v1/pis: register, list, show, update, delete, power and the boot timeline."""

from __future__ import annotations

from typing import Any

from flask import g
from flask.views import MethodView
from marshmallow import Schema, fields, validate

from ..fleet import Event, Pi, PiState, PowerResult
from ..redaction import redacted
from .auth import FLEET, FLEET_READ, allow
from .blueprint import METADATA_LIMIT, Blueprint
from .current import current_fleet
from .fields import BootProtocol, Ip, JsonObject, Labels, Mac, Serial

blp = Blueprint("pis", __name__, url_prefix="/api/v1/pis", description="Raspberry Pis")

STATES = [s.value for s in PiState]
BOOT_PROTOCOL_HELP = "what its EEPROM boots over: tftp, or http (a signed boot.img; Pi 4 and 5)"
MODELS = ["unknown", "3B", "3B+", "4B", "400", "CM4", "5", "CM5", "500"]


class PiSchema(Schema):
    serial = fields.String()
    mac = fields.String(allow_none=True)
    model = fields.String()
    state = fields.String()
    broken_reason = fields.String()
    power_driver = fields.String()
    power_settings = fields.Method("_power_settings")
    power_state = fields.String()
    ip = fields.String(attribute="last_ip", allow_none=True)
    labels = fields.List(fields.String())
    boot_protocol = fields.String()
    boot = fields.Method(
        "_boot", metadata={"description": "a baked Pi's boot: booting, up or stalled"}
    )
    last_seen = fields.DateTime(allow_none=True)
    bake_id = fields.String(allow_none=True)
    host = fields.String(
        allow_none=True, metadata={"description": "the Bakery host that serves it"}
    )
    host_down = fields.Method(
        "_host_down", metadata={"description": "its host has stopped beating: nobody serves it"}
    )
    created_at = fields.DateTime()
    updated_at = fields.DateTime()

    def _boot(self, pi: Any) -> str | None:
        return current_fleet().boot_status(pi)

    def _host_down(self, pi: Any) -> bool:
        if "down_hosts" not in g:  # once per request, however many Pis are listed
            g.down_hosts = current_fleet().down_hosts()
        return pi.host in g.down_hosts

    def _power_settings(self, pi: Any) -> dict[str, Any]:
        """Write-only secrets: a relay's password or token is never shown again."""
        shown: dict[str, Any] = redacted(pi.power_settings or {})
        return shown


class PiRegisterSchema(Schema):
    serial = Serial(required=True)
    mac = Mac(load_default=None)
    model = fields.String(load_default="unknown", validate=validate.OneOf(MODELS))
    power_driver = fields.String(load_default=None, validate=validate.Length(1, 32))
    power_settings = JsonObject(METADATA_LIMIT, load_default=dict)
    labels = Labels(load_default=list)
    ip = Ip(load_default=None)
    boot_protocol = BootProtocol(BOOT_PROTOCOL_HELP, load_default="tftp")
    host = fields.String(
        load_default=None,
        validate=validate.Length(1, 255),
        metadata={"description": "the Bakery host that serves it (default: this one)"},
    )


class PiUpdateSchema(Schema):
    mac = Mac()
    model = fields.String(validate=validate.OneOf(MODELS))
    power_driver = fields.String(validate=validate.Length(1, 32))
    power_settings = JsonObject(METADATA_LIMIT)
    labels = Labels()
    ip = Ip()
    boot_protocol = BootProtocol(BOOT_PROTOCOL_HELP)
    host = fields.String(
        validate=validate.Length(1, 255),
        metadata={"description": "the Bakery host that serves it (move it there)"},
    )
    state = fields.String(validate=validate.OneOf(["available", "broken"]))
    reason = fields.String(validate=validate.Length(max=500), load_default="")


class PiQuerySchema(Schema):
    state = fields.String(validate=validate.OneOf(STATES))
    label = Labels()


class PowerSchema(Schema):
    action = fields.String(required=True, validate=validate.OneOf(["on", "off", "cycle", "status"]))


class PowerResultSchema(Schema):
    serial = fields.String()
    action = fields.String()
    state = fields.String()
    message = fields.String()


class EventSchema(Schema):
    id = fields.Integer()
    kind = fields.String()
    message = fields.String()
    bake_id = fields.String(allow_none=True)
    data = fields.Dict()
    created_at = fields.DateTime()
    since_power_on = fields.Float(
        allow_none=True,
        metadata={"description": "seconds since the power-on that began its boot, if any"},
    )


class ConsoleLineSchema(Schema):
    line = fields.String()
    created_at = fields.DateTime()


class ConsoleQuerySchema(Schema):
    limit = fields.Integer(load_default=200, validate=validate.Range(1, 2000))


class EventQuerySchema(Schema):
    limit = fields.Integer(load_default=200, validate=validate.Range(1, 10000))
    bake_id = fields.String()
    after = fields.Integer(
        validate=validate.Range(min=0), metadata={"description": "only events newer than this id"}
    )


@blp.route("/<serial>/console")
class PiConsole(MethodView):
    @allow(FLEET_READ)
    @blp.arguments(ConsoleQuerySchema, location="query")
    @blp.response(200, ConsoleLineSchema(many=True))
    def get(self, args: dict[str, Any], serial: str) -> list[Any]:
        """The Pi's bootloader log (EEPROM NETCONSOLE), oldest first."""
        return current_fleet().console(serial, args["limit"])


def power_answer(serial: str, action: str, result: PowerResult) -> dict[str, str]:
    """What a power route answers: which Pi, what was asked, what the driver reported."""
    return {"serial": serial, "action": action, "state": result.state, "message": result.message}


@blp.route("")
class Pis(MethodView):
    @allow(FLEET_READ)
    @blp.arguments(PiQuerySchema, location="query")
    @blp.response(200, PiSchema(many=True))
    def get(self, args: dict[str, Any]) -> list[Pi]:
        """List Pis, optionally by state and labels."""
        return current_fleet().list_pis(args.get("state"), args.get("label") or [])

    @allow(FLEET)
    @blp.arguments(PiRegisterSchema)
    @blp.response(201, PiSchema)
    def post(self, args: dict[str, Any]) -> Pi:
        """Register a Pi; it is available for bakes at once."""
        return current_fleet().register_pi(**args)


@blp.route("/<serial>")
class PiResource(MethodView):
    @allow(FLEET_READ)
    @blp.response(200, PiSchema)
    def get(self, serial: str) -> Pi:
        return current_fleet().get_pi(serial)

    @allow(FLEET)
    @blp.arguments(PiUpdateSchema)
    @blp.response(200, PiSchema)
    def patch(self, args: dict[str, Any], serial: str) -> Pi:
        """Change a Pi's description; ``state`` marks it broken or available again."""
        state = args.pop("state", None)
        reason = args.pop("reason", "")
        pi = current_fleet().update_pi(serial, **args)
        if state:
            pi = current_fleet().set_pi_state(pi.serial, PiState(state), reason)
        return pi

    @allow(FLEET)
    @blp.response(204)
    def delete(self, serial: str) -> None:
        current_fleet().delete_pi(serial)


@blp.route("/<serial>/power")
class PiPower(MethodView):
    @allow(FLEET)
    @blp.arguments(PowerSchema)
    @blp.response(200, PowerResultSchema)
    def post(self, args: dict[str, Any], serial: str) -> dict[str, str]:
        """Switch a Pi on or off, power-cycle it, or ask its power state."""
        result = current_fleet().operator_power(serial, args["action"])
        return power_answer(current_fleet().get_pi(serial).serial, args["action"], result)


@blp.route("/<serial>/events")
class PiEvents(MethodView):
    @allow(FLEET_READ)
    @blp.arguments(EventQuerySchema, location="query")
    @blp.response(200, EventSchema(many=True))
    def get(self, args: dict[str, Any], serial: str) -> list[Event]:
        """The Pi's timeline, oldest first: states, power calls, boot steps."""
        return current_fleet().timeline(serial, **args)
