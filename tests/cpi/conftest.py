"""Fixtures for the CPI tests: a live Bakery (real gunicorn) and the CPI pointed at it."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bakery.sim.server import BakeryProcess as LiveServer

from .harness import ok, request, run_cpi, write_config


@pytest.fixture
def bakery_config(tmp_path, ppi_dir) -> dict:
    """Settings of the live Bakery: a temp data dir and SQLite (tests may move the root)."""
    return {
        "root": str(tmp_path / "data"),
        "database_url": f"sqlite:///{tmp_path / 'bakery.db'}",
        "workers": 4,
        "power_on_gap": 0,
        "nfs_backend": "ganesha",
        "exports_file": str(tmp_path / "exports.conf"),
        "log_level": "WARNING",
        "ppi_dir": str(ppi_dir),
    }


@pytest.fixture
def bakery(bakery_config, tmp_path):
    server = LiveServer(bakery_config, tmp_path)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def api(bakery):
    """The Bakery API as an operator sees it, to set up Pis and check what the CPI did."""
    session = bakery.session()
    session.base = f"{bakery.url}/api/v1"
    yield session
    session.close()


@pytest.fixture
def cpi(bakery, tmp_path) -> Callable[..., dict]:
    """``cpi("has_vm", cid)`` runs the executable and returns the checked response."""
    config_file = write_config(tmp_path / "cpi.json", bakery.url, bakery.token)

    def call(method: str, *arguments, api_version: int = 2, context: dict | None = None) -> dict:
        return run_cpi(
            config_file, request(method, *arguments, api_version=api_version, context=context)
        )

    return call


@pytest.fixture
def stemcell(cpi, sd_image_file) -> str:
    """The test SD image uploaded as a stemcell, the way the director does."""
    properties = {"name": "bosh-pi-arm64-ubuntu-noble", "version": "1.0"}
    return ok(cpi("create_stemcell", str(sd_image_file), properties))
