"""Fixtures shared by the whole suite: settings on a temp data dir, the database
(SQLite and a real PostgreSQL on loopback), the app and an authenticated client,
and a real SD-card image to import."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from bakery import auth, models
from bakery.app import create_app
from bakery.config import load_settings
from bakery.netboot.tftp import TftpServer, listening_socket
from tests.support.postgres import create_database, pg_bindir, postgres_server
from tests.support.server import LiveServer

DATABASES = [
    "sqlite",
    pytest.param("postgresql", marks=pytest.mark.postgres),
]


def pytest_collection_modifyitems(config, items):
    """Skip what this machine cannot run, with the reason, instead of failing."""
    skip_root = pytest.mark.skip(reason="needs root")
    skip_pg = pytest.mark.skip(reason="PostgreSQL server not installed")
    for item in items:
        if "root" in item.keywords and os.geteuid() != 0:
            item.add_marker(skip_root)
        if "postgres" in item.keywords and pg_bindir() is None:
            item.add_marker(skip_pg)


@pytest.fixture(scope="session")
def pg_admin_url():
    with postgres_server() as url:
        yield url


@pytest.fixture(params=DATABASES)
def db_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'bakery.db'}"
    return create_database(request.getfixturevalue("pg_admin_url"))


@pytest.fixture
def settings(tmp_path, db_url):
    """Settings for one test: its own data dir and database, no power-on gap."""
    return load_settings(
        environ={},
        root=tmp_path / "data",
        database_url=db_url,
        power_on_gap=0,
        nfs_backend="ganesha",
        exports_file=str(tmp_path / "exports.conf"),
    )


@pytest.fixture
def live_server(tmp_path, db_url):
    """Start a real ``bakery serve`` (gunicorn) on this test's database; stop it after.

    Call it with setting overrides: ``server = live_server(workers=4)``."""
    started = []

    def start(**overrides) -> LiveServer:
        config = {
            "root": str(tmp_path / "data"),
            "database_url": db_url,
            "power_on_gap": 0,
            "nfs_backend": "ganesha",
            "exports_file": str(tmp_path / "exports.conf"),
            "log_level": "WARNING",
            "tftp_enabled": False,
            **overrides,
        }
        started.append(LiveServer(config, tmp_path).start())
        return started[-1]

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def app(settings):
    application = create_app(settings)
    yield application
    if not models.database.is_closed():
        models.database.close()


@pytest.fixture
def fleet(app):
    with models.database.connection_context():
        yield app.extensions["bakery.fleet"]


@pytest.fixture
def tftp_server(settings, fleet):
    """Bakery's TFTP server, in this process, on a free loopback port."""
    server = TftpServer(settings, fleet.boot_source(), sock=listening_socket("127.0.0.1", 0))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def admin_token(app) -> str:
    with models.database.connection_context():
        _, token = auth.create_token("test-admin")
    return token


@pytest.fixture
def client(app, admin_token):
    test_client = app.test_client()
    test_client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {admin_token}"
    return test_client


@pytest.fixture
def anonymous(app):
    return app.test_client()


@pytest.fixture(scope="session")
def sd_image_file(tmp_path_factory) -> Path:
    """A real Pi-like SD image (MBR, FAT32 boot, ext4 root), built once per session."""
    from tests.support.sdimage import sd_image

    return sd_image(tmp_path_factory.mktemp("sdimage"))


@pytest.fixture
def sd_image(sd_image_file, tmp_path) -> Path:
    """A private copy, so a test may corrupt it."""
    copy = tmp_path / "pi.img"
    shutil.copyfile(sd_image_file, copy)
    return copy
