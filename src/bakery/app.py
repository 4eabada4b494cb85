"""The Flask app factory and the one-time start-up work of a Bakery host."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask

from . import api, auth, datadir, metrics, models, web
from .config import Settings, load_settings
from .fleet import Fleet
from .models import shared_database


def create_app(settings: Settings | None = None) -> Flask:
    """Build the API app. Safe to call once per gunicorn worker: it only binds the
    database and creates missing tables; recovery runs once, in ``prepare_host``."""
    settings = settings or load_settings()
    app = Flask("bakery", static_folder=None)  # the dashboard serves its own /static
    app.config["MAX_CONTENT_LENGTH"] = None  # uploads are streamed; the limit is checked there
    models.connect(settings.database)
    models.create_schema()
    app.extensions["bakery.fleet"] = Fleet(settings)
    _init_db_per_request(app)
    api.init_app(app)
    web.init_app(app, settings)
    return app


def _init_db_per_request(app: Flask) -> None:
    """One connection per request: cheap on SQLite, pooled by URL on PostgreSQL."""

    @app.before_request
    def _connect() -> None:
        models.database.connect(reuse_if_open=True)

    @app.teardown_request
    def _close(_exc: BaseException | None) -> None:
        if not models.database.is_closed():
            models.database.close()


def prepare_host(settings: Settings) -> dict[str, Any]:
    """What a host does once before serving: the data dir checked, schema, joining the
    database's hosts (Conflict if another live process holds ``host_id``, before anything
    of that process is touched: its metrics, its bakes), the metrics of the last run
    cleared, first admin token, crash recovery. Runs in the gunicorn master, before
    workers fork and before any child starts (they inherit its metrics directory); the
    power restore runs beside the API (``serve.start_power_restore``)."""
    log = logging.getLogger(__name__)
    datadir.claim_data_dir(settings.root)
    warning = datadir.mount_warning(settings.root)
    if warning:
        log.warning("%s", warning)
    models.connect(settings.database)
    models.create_schema()
    with models.database.connection_context():
        fleet = Fleet(settings)
        instance = fleet.join_host()
        metrics.start_afresh(metrics.directory_of(settings))
        auth.import_configured_tokens(settings)
        token_file = auth.ensure_admin_token(settings)
        if shared_database():  # other hosts may ask this one for its bakeforms
            auth.ensure_host_token(settings)
        counts = fleet.recover()
    log.info("recovery: %s", counts)
    return {"admin_token_file": token_file, "host_instance": instance, **counts}
