"""Health check: the one route without a token, for load balancers and monit."""

from __future__ import annotations

from flask.views import MethodView

from .. import __version__
from .blueprint import Blueprint
from .current import current_fleet

blp = Blueprint("health", __name__, url_prefix="/api/v1/health", description="Liveness")


@blp.route("")
class Health(MethodView):
    @blp.doc(security=[])
    def get(self) -> dict[str, str]:
        """Answer when the service and its database work."""
        current_fleet().check_database()
        return {"status": "ok", "version": __version__}
