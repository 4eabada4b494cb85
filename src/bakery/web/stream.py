"""A Pi's timeline as server-sent events: the page's script opens
``/pis/<serial>/timeline`` and adds each new event as the fleet records it, whichever
process recorded it (a TFTP worker, the netboot service, another API worker), by reading
the database once a second. A stream ends after ``STREAM_SECONDS`` and the browser
reconnects with the last event id it saw (EventSource does), so a closed tab frees its
thread within that time and a revoked token is refused at the reconnection; each worker
serves at most ``MAX_STREAMS`` at once, so watching pages cannot take every thread the
API needs."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

from flask import Response, request, stream_with_context

from ..api.current import current_fleet as fleet
from ..errors import NotFound
from ..fleet import Event, Pi
from .blueprint import blp
from .session import requires

#: Seconds between two looks at the database.
POLL_SECONDS = 1.0
#: Seconds a stream lasts before the browser is asked to reconnect.
STREAM_SECONDS = 60.0
#: Streams one worker serves at once (it has ``serve.WORKER_THREADS`` threads).
MAX_STREAMS = 4
#: Milliseconds the browser waits before reconnecting; when the worker had no stream free.
RETRY_MS = 1000
BUSY_RETRY_MS = 5000

_streams = threading.BoundedSemaphore(MAX_STREAMS)
#: Set when the worker is stopping: open streams end at once instead of holding the
#: worker's graceful stop for up to ``STREAM_SECONDS`` (the browser reconnects elsewhere).
_stopping = threading.Event()


def stop_streams() -> None:
    """End every open stream of this process (its worker is stopping)."""
    _stopping.set()


def event_data(event: Event) -> dict[str, Any]:
    """One timeline row as the page's script shows it."""
    return {
        "id": event.id,
        "kind": event.kind,
        "message": event.message,
        "at": event.created_at.isoformat(timespec="seconds"),
        "since_power_on": event.since_power_on,
    }


def pi_data(pi: Pi) -> dict[str, Any]:
    """The Pi's head line: state, power, boot and last seen, refreshed as they change."""
    return {
        "state": pi.state,
        "power_state": pi.power_state,
        "boot": fleet().boot_status(pi),
        "bake_id": pi.bake_id,
    }


def sse(kind: str, data: dict[str, Any], event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data)}\n\n"


@blp.route("/pis/<serial>/timeline")
@requires("fleet_read")
def timeline_stream(serial: str) -> Response:
    """The events after ``Last-Event-ID`` (or ``?after=``), then new ones as they come."""
    pi = fleet().get_pi(serial)
    after = _last_seen_id()
    if not _streams.acquire(blocking=False):
        # an EventSource that gets an error closes for good: this one comes back later
        return Response(f"retry: {BUSY_RETRY_MS}\n\n", mimetype="text/event-stream")
    body = stream_with_context(_follow(pi.serial, after))
    response = Response(body, mimetype="text/event-stream", headers={"Cache-Control": "no-store"})
    response.call_on_close(_streams.release)  # also when the client left before the first byte
    return response


def _last_seen_id() -> int:
    raw = request.headers.get("Last-Event-ID") or request.args.get("after") or "0"
    if not (raw.isascii() and raw.isdecimal()) or len(raw) > 18:
        return 0
    return int(raw)


def _follow(serial: str, after: int) -> Iterator[str]:
    """The stream's body; its database connection is the request's own."""
    yield f"retry: {RETRY_MS}\n\n"
    shown: dict[str, Any] | None = None
    ends = time.monotonic() + STREAM_SECONDS
    while True:
        try:
            events = fleet().timeline(serial, after=after, limit=500)
            head = pi_data(fleet().get_pi(serial))
        except NotFound:  # deleted meanwhile: nothing more to follow
            return
        for event in events:
            after = event.id
            yield sse("timeline", event_data(event), event.id)
        if head != shown:
            shown = head
            yield sse("pi", head)
        if time.monotonic() >= ends or _stopping.wait(POLL_SECONDS):
            return
