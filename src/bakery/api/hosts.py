"""/api/v1/hosts: the Bakery hosts sharing this database, their liveness and their Pis."""

from __future__ import annotations

from flask.views import MethodView
from marshmallow import Schema, fields

from ..fleet import HostStatus
from .auth import FLEET_READ, allow
from .blueprint import Blueprint
from .current import current_fleet

blp = Blueprint("hosts", __name__, url_prefix="/api/v1/hosts", description="Bakery hosts")


class HostSchema(Schema):
    name = fields.String()
    live = fields.Boolean(metadata={"description": "its heartbeat is recent"})
    machine = fields.String()
    started_at = fields.DateTime()
    heartbeat_at = fields.DateTime()
    data_dir = fields.String()
    data_bytes = fields.Integer()
    data_free_bytes = fields.Integer()
    pis = fields.Integer(metadata={"description": "Pis that belong to it"})


@blp.route("")
class Hosts(MethodView):
    @allow(FLEET_READ)
    @blp.response(200, HostSchema(many=True))
    def get(self) -> list[HostStatus]:
        """Every host that has joined, live or not, with its Pis and data dir space."""
        return current_fleet().list_hosts()
