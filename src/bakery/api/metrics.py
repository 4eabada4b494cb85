"""/metrics: Prometheus metrics for a token of the fleet's readers (a monitoring user's
``viewer`` token will do), and the count and duration of every request the app answers.

The page shows every Bakery process's counts (``bakery.metrics``) and the fleet's gauges
from the database; ``metrics_bind`` serves the same without a token, in a process of its
own (``bakery metrics``). Requests are counted by their URL rule (``/api/v1/pis/<serial>``),
never their path, which would make a series of every serial asked for."""

from __future__ import annotations

import time

from flask import Flask, Response, g, request, request_finished, request_started
from flask.views import MethodView

from .. import metrics
from .auth import FLEET_READ, allow
from .blueprint import Blueprint
from .current import current_fleet

blp = Blueprint("metrics", __name__, url_prefix="/metrics", description="Prometheus metrics")

#: The route label of a request no URL rule matched (a 404, whatever its path).
UNMATCHED = "unmatched"


@blp.route("")
class Metrics(MethodView):
    @allow(FLEET_READ)
    @blp.doc(responses={200: {"description": "Prometheus text (or OpenMetrics, if asked)"}})
    def get(self) -> Response:
        """Every Bakery process's counters and histograms, and the fleet's gauges."""
        body, content_type = metrics.exposition(
            request.headers.get("Accept"), [current_fleet().gauges()]
        )
        return Response(body, content_type=content_type)


def _started(_app: Flask) -> None:
    g.request_started = time.monotonic()


def _finished(_app: Flask, response: Response) -> None:
    started = g.get("request_started")
    seconds = None if started is None else time.monotonic() - started
    route = request.url_rule.rule if request.url_rule is not None else UNMATCHED
    metrics.api_request(route, request.method, response.status_code, seconds)


def init_app(app: Flask) -> None:
    """Count every request of ``app``: its signals fire before the first ``before_request``
    function (one may answer at once: a 401) and after the response is final."""
    request_started.connect(_started, app)
    request_finished.connect(_finished, app)
