"""Fixtures shared by the whole suite: settings on a temp data dir, the database
(SQLite and a real PostgreSQL on loopback), the app and an authenticated client, a real
SD-card image, that image imported as a bakeform, and baked Pis.

The one way a test says what it needs to run: ``@pytest.mark.root`` (loop devices,
namespaces, owners), ``@pytest.mark.tools("mkfs.xfs", ...)`` (programs on the PATH) and
``@pytest.mark.postgres``; what is missing is skipped with one line naming it."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

from bakery import auth, models
from bakery.app import create_app
from bakery.config import load_settings
from bakery.netboot.tftp import TftpServer, listening_socket
from bakery.sim.server import BakeryProcess as LiveServer
from tests.support.postgres import create_database, pg_bindir, postgres_server

# Bakery's own settings in the environment (``make`` exports BAKERY_ROOT for ``make run``,
# a developer's shell may hold more) would override what each test configures for the
# Bakery processes it starts; the tests' own variables (BAKERY_TEST_*) stay.
for _name in [name for name in os.environ if name.startswith("BAKERY_")]:
    if not _name.startswith("BAKERY_TEST_"):
        del os.environ[_name]

#: Where the tests' relay boards listen (the webhook_hosts of their Bakery).
LOOPBACK_RELAYS = ["127.0.0.1", "localhost"]

DATABASES = [
    "sqlite",
    pytest.param("postgresql", marks=pytest.mark.postgres),
]


def pytest_collection_modifyitems(config, items):
    """Skip what this machine cannot run, naming what it lacks, instead of failing."""
    for item in items:
        missing = [tool for mark in item.iter_markers("tools") for tool in mark.args]
        missing = [tool for tool in dict.fromkeys(missing) if shutil.which(tool) is None]
        if "root" in item.keywords and os.geteuid() != 0:
            missing.insert(0, "root")
        if "postgres" in item.keywords and pg_bindir() is None:
            missing.append("a PostgreSQL server (postgresql)")
        if missing:
            item.add_marker(pytest.mark.skip(reason=f"needs {', '.join(missing)}"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test (``item.report_call``...): a fixture's teardown
    can then tell whether its test failed, and say more about why."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def failed(request: pytest.FixtureRequest) -> bool:
    """Whether the test ``request`` belongs to failed (to call from a fixture's teardown)."""
    return any(
        getattr(getattr(request.node, f"report_{when}", None), "failed", False)
        for when in ("setup", "call")
    )


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
def settings(tmp_path, db_url, ppi_dir):
    """Settings for one test: its own data dir and database, no power-on gap, PPIs from
    ``ppi_dir`` and relay boards on loopback."""
    return load_settings(
        environ={},
        root=tmp_path / "data",
        database_url=db_url,
        power_on_gap=0,
        nfs_backend="ganesha",
        exports_file=str(tmp_path / "exports.conf"),
        ppi_dir=str(ppi_dir),
        webhook_hosts=LOOPBACK_RELAYS,
    )


@pytest.fixture
def ppi_dir(tmp_path) -> Path:
    """The test Bakery's ``ppi_dir``: where ``install_ppi`` puts its PPI programs."""
    path = tmp_path / "ppi"
    path.mkdir(exist_ok=True)
    return path


def install_ppi(ppi_dir: Path, name: str, script: str, *, python: bool = True) -> str:
    """A PPI program called ``name`` in ``ppi_dir``: ``script`` run by this interpreter
    (``python``), or a script with its own ``#!`` line. Returns the name to configure."""
    path = ppi_dir / name
    path.write_text(f"#!{sys.executable}\n{script}" if python else script)
    path.chmod(0o755)
    return name


GATED_PPI = """\
import json, os, sys, time
request = json.load(sys.stdin)
if request["action"] == "{action}":
    open("{gate}/started", "w").close()
    while not os.path.exists("{gate}/open"):   # the relay is stuck until the test opens it
        time.sleep(0.05)
print("ok")
"""


def upload_raspios(server: LiveServer, image_file: Path) -> None:
    """Import the test SD image as bakeform ``raspios`` through a live server's API."""
    with open(image_file, "rb") as image:
        answer = server.session().put(f"{server.url}/api/v1/bakeforms/raspios", data=image)
    assert answer.status_code == 201, answer.text


def install_gated_ppi(ppi_dir: Path, gate: Path, action: str) -> str:
    """A PPI that, asked for ``action`` (``poweron``, ``poweroff``), touches
    ``gate/started`` and hangs until the test touches ``gate/open``; every other action
    is done at once. Returns the program name to configure."""
    gate.mkdir(exist_ok=True)
    return install_ppi(ppi_dir, f"gated-{action}", GATED_PPI.format(gate=gate, action=action))


@pytest.fixture
def live_server(tmp_path, db_url, ppi_dir):
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
            "ppi_dir": str(ppi_dir),
            "webhook_hosts": LOOPBACK_RELAYS,
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
        _, token = auth.create_token("test-admin", role="admin")
    return token


@pytest.fixture
def client(app, admin_token):
    test_client = app.test_client()
    test_client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {admin_token}"
    return test_client


@pytest.fixture
def anonymous(app):
    return app.test_client()


@pytest.fixture
def raspios(fleet, sd_image_file):
    """The test SD image imported through the fleet as bakeform ``raspios``."""
    with open(sd_image_file, "rb") as image:
        return fleet.import_bakeform("raspios", image)


@pytest.fixture
def bake_pi(fleet, raspios):
    """``bake_pi(**pi)``: registers Pi 00000001 at 127.0.0.11 (``pi`` may add to or
    override its registration) and bakes ``raspios`` onto it; returns the bake."""

    def bake(serial: str = "00000001", ip: str = "127.0.0.11", **pi):
        fleet.register_pi(serial, ip=ip, **pi)
        return fleet.bake("raspios", serial=serial)

    return bake


@pytest.fixture
def count_queries() -> Callable[[], AbstractContextManager[list[str]]]:
    """``with count_queries() as sql:`` collects every statement sent meanwhile."""

    @contextmanager
    def counting() -> Iterator[list[str]]:
        sent: list[str] = []
        execute = models.database.obj.execute_sql

        def recording(sql, params=None, *args, **kwargs):
            sent.append(sql)
            return execute(sql, params, *args, **kwargs)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(models.database.obj, "execute_sql", recording)
            yield sent

    return counting


@pytest.fixture(scope="session")
def sd_image_file(tmp_path_factory) -> Path:
    """A real Pi-like SD image (MBR, FAT32 boot, ext4 root), built once per session."""
    from bakery.sim.image import sd_image

    return sd_image(tmp_path_factory.mktemp("sdimage"))


@pytest.fixture
def sd_image(sd_image_file, tmp_path) -> Path:
    """A private copy, so a test may corrupt it."""
    copy = tmp_path / "pi.img"
    shutil.copyfile(sd_image_file, copy)
    return copy


@pytest.fixture
def deep_chain():
    """``deep_chain(top, depth)``: ``make_deep_chain`` whose trees go at teardown even when
    the test failed, since pytest's own clean-up of old runs cannot delete them."""
    from bakery import fsutil
    from tests.support.deep import make_deep_chain

    made: list[Path] = []

    def make(top: Path, depth: int) -> None:
        made.append(top)
        make_deep_chain(top, depth)

    yield make
    for top in made:
        if top.exists():
            fsutil.remove(top)
