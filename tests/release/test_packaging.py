"""packages/bakery/packaging builds a working virtualenv from the vendored wheels alone:
run as the agent runs it (``bash -x packaging`` in the unpacked package, the BOSH_*
variables set) in a network namespace of its own, so nothing can come from an index."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

from .bosh import RELEASE, compile_package, fetched_blobs, needs_ruby, run_packaged

pytestmark = [
    pytest.mark.slow,
    needs_ruby,
    pytest.mark.root,
    pytest.mark.tools("unshare"),
]
PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"


@pytest.fixture(scope="module")
def wheels(request, tmp_path_factory) -> Path:
    """What scripts/fetch-blobs vendors, for this machine's Python: fetched once and kept
    in pytest's cache (when enabled) until setup.cfg's dependencies change."""
    digest = hashlib.sha256((RELEASE / "setup.cfg").read_bytes()).hexdigest()[:12]
    return fetched_blobs(
        request,
        tmp_path_factory,
        f"bakery-blobs-{PYTHON_VERSION}-{digest}",
        ["--python-version", PYTHON_VERSION, "wheels"],
        env={**os.environ, "PYTHON": sys.executable},
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory, wheels) -> Path:
    """The compiled bakery package, in a /var/vcap/packages-like directory whose python3
    package is this machine's interpreter."""
    root = tmp_path_factory.mktemp("bosh")
    (root / "packages" / "python3" / "bin").mkdir(parents=True)
    (root / "packages" / "python3" / "bin" / "python3").symlink_to(base_interpreter())
    return compile_package("bakery", wheels, root)


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
