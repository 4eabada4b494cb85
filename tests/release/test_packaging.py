"""packages/bakery/packaging builds a working virtualenv from Bakery's wheel and the
vendored wheels alone: run as the agent runs it (``bash -x packaging`` in the unpacked
package, the BOSH_* variables set) in a network namespace of its own, so nothing can come
from an index. Here the python3 package is this machine's interpreter (the same CPython
3.11 the package builds); tests/release/test_packaged_service.py uses the real one."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from .bosh import SRC, compile_package, needs_ruby, release_blobs, run_packaged

pytestmark = [
    pytest.mark.slow,
    needs_ruby,
    pytest.mark.root,
    pytest.mark.tools("unshare"),
]
PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"


@pytest.fixture(scope="module")
def blobs(request, tmp_path_factory) -> Path:
    return release_blobs(request, tmp_path_factory)


@pytest.fixture(scope="module")
def built(tmp_path_factory, blobs) -> Path:
    """The compiled bakery package, in a /var/vcap/packages-like directory whose python3
    package is this machine's interpreter."""
    root = tmp_path_factory.mktemp("bosh")
    (root / "packages" / "python3" / "bin").mkdir(parents=True)
    (root / "packages" / "python3" / "bin" / "python3").symlink_to(base_interpreter())
    return compile_package("bakery", blobs, root)


def base_interpreter() -> Path:
    """The interpreter this test's virtualenv was made from: a stock CPython, as the
    python3 package provides."""
    return Path(sys.base_prefix) / "bin" / f"python{PYTHON_VERSION}"


def test_packaged_bakery_runs_from_its_own_virtualenv(built):
    help_text = run_packaged(built / "bin" / "bakery", "--help")
    assert help_text.returncode == 0, help_text.stderr
    assert "serve" in help_text.stdout
    where = run_packaged(
        built / "bin" / "python", "-c", "import bakery, flask; print(bakery.__file__)"
    )
    assert where.stdout.startswith(str(built))


def test_packaged_cpi_answers_info(built, tmp_path):
    config = tmp_path / "cpi.json"
    config.write_text(
        json.dumps(
            {
                "bakery": {"url": "https://10.0.0.10:8443", "token": "t" * 40},
                "agent": {"mbus": "nats://10.0.0.6:4222"},
            }
        )
    )
    request = {"method": "info", "arguments": [], "context": {"director_uuid": "x"}}
    answer = run_packaged(built / "bin" / "bakery-cpi", str(config), stdin=json.dumps(request))
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout)["result"]["api_version"] == 2


def test_packaged_virtualenv_holds_the_postgresql_driver(built):
    probe = run_packaged(built / "bin" / "python", "-c", "import psycopg2")
    assert probe.returncode == 0, probe.stderr


def installed_files(built: Path) -> set[str]:
    site = next((built / "lib").glob("python3*/site-packages"))
    return {
        path.relative_to(site).as_posix()
        for top in ("bakery", "bakery_cpi")
        for path in (site / top).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_the_package_holds_every_file_of_the_source_tree(built):
    """What the code reads at run time besides its modules (the disk agent and boot
    report with their systemd units, the dashboard's templates and static files) is
    package data: missing from the package, a BOSH-deployed Bakery fails every bake."""
    sources = {
        path.relative_to(SRC).as_posix()
        for top in ("bakery", "bakery_cpi")
        for path in (SRC / top).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    data = {path for path in sources if not path.endswith(".py")}
    assert {"bakery/stemcell/files/bakery-disk-agent", "bakery/web/templates/pi.html"} <= data
    assert sources - installed_files(built) == set()


def test_the_packaged_service_finds_its_package_data(built):
    """Read through the package's own loaders, as the running service reads them."""
    probe = run_packaged(
        built / "bin" / "python",
        "-c",
        "from bakery import stemcell, app; from bakery.config import load_settings;"
        "import tempfile, pathlib;"
        "root = pathlib.Path(tempfile.mkdtemp());"
        "web = app.create_app(load_settings(environ={}, root=root / 'data',"
        " database_url=f'sqlite:///{root}/b.db'));"
        "page = web.test_client().get('/sign-in');"
        "print(page.status_code, 'API token' in page.get_data(as_text=True));"
        "print(web.test_client().get('/static/bakery.js').status_code);"
        "entries = stemcell.install.disk_agent_entries() + stemcell.install.boot_report_entries();"
        "print(sum(len(getattr(e, 'data', b'')) > 0 for e in entries))",
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.splitlines() == ["200 True", "200", "6"]
