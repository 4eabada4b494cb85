"""Health check: the one route without a token, for load balancers and monit."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint

from .. import __version__
from ..models import Pi

blp = Blueprint("health", __name__, url_prefix="/api/v1/health", description="Liveness")


@blp.route("")
class Health(MethodView):
    @blp.doc(security=[])
    def get(self):
        """Answer when the service and its database work."""
        Pi.select().limit(1).count()
        return {"status": "ok", "version": __version__}
