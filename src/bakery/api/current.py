"""The one way a view reaches the fleet: the app's own, typed."""

from __future__ import annotations

from flask import current_app

from ..fleet import Fleet


def current_fleet() -> Fleet:
    """The fleet of the app handling this request (one per gunicorn worker)."""
    fleet: Fleet = current_app.extensions["bakery.fleet"]
    return fleet
