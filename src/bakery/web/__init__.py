"""The web dashboard at ``/``: server-rendered pages over the fleet facade, for operators
watching a rack: the fleet as a grid, each Pi's live boot timeline and bootloader log,
bakeforms, bakes and disks with the actions the signed-in token's role allows.

- ``blueprint``: the blueprint, its HTML error pages and security headers;
- ``session``: sign-in with an API token (a signed cookie holding the token's hash),
  CSRF tokens on every form, role checks;
- ``pages`` (what is read) and ``actions`` (the forms' POSTs, then back to a page);
- ``stream``: a Pi's timeline as server-sent events.

Reading works without JavaScript; ``static/bakery.js`` adds the live timeline and the
upload's progress. Nothing is fetched from elsewhere: the Content-Security-Policy says so.
"""

from __future__ import annotations

from flask import Flask

from ..config import Settings
from . import actions, pages, session, stream  # noqa: F401  # their routes join the blueprint
from .blueprint import blp, configure_sessions


def init_app(app: Flask, settings: Settings) -> None:
    configure_sessions(app, settings)
    app.register_blueprint(blp)
