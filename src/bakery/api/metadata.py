"""/api/v1/metadata: what a baked Pi may ask about itself, without a token.

Like a cloud's metadata service, the answer depends on who asks: the bake on the Pi whose
address the request comes from (the address its NFS root is exported to), and only when
the request shows that bake's secret (header ``X-Bakery-Bake-Secret``), which Bakery wrote
into the Pi's root: an address is a claim anyone on the Pi LAN can make. The BOSH agent
can use it as an HTTP settings source instead of the File source.
"""

from __future__ import annotations

from typing import Any

from flask import request
from flask.views import MethodView

from .blueprint import Blueprint
from .current import current_fleet

SECRET_HEADER = "X-Bakery-Bake-Secret"

blp = Blueprint(
    "metadata", __name__, url_prefix="/api/v1/metadata", description="Per-Pi metadata (no token)"
)


@blp.route("/boot")
class BootReport(MethodView):
    @blp.doc(security=[])
    @blp.response(200, description="the bake the report was filed under")
    def post(self) -> dict[str, Any]:
        """The caller's boot report: its userspace is up (the first report after a
        power-on), or still up (a heartbeat)."""
        secret = request.headers.get(SECRET_HEADER, "")
        return current_fleet().report_userspace(request.remote_addr or "", secret)


@blp.route("/agent-settings")
class AgentSettingsForCaller(MethodView):
    @blp.doc(security=[])
    @blp.response(200, description="the caller's agent settings")
    def get(self) -> dict[str, Any]:
        """The agent settings of the bake on the Pi at the caller's address."""
        secret = request.headers.get(SECRET_HEADER, "")
        return current_fleet().agent_settings_for_caller(request.remote_addr or "", secret)
