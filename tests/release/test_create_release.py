"""The release as an operator builds it, with the real bosh CLI (``BOSH_CLI``, or ``bosh``
on the PATH; ``.ci/run`` points it at ../shared/bosh): a clean export of this checkout,
``scripts/fetch-blobs --offline`` adding the blobs from a cache filled from the pinned
sources, ``bosh create-release --force --tarball``, then ``bosh inspect-local-release``.
What the tarball holds is compared with the job and package specs."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from tests.support import bosh_tools

from .bosh import (
    bakery_release,
    job_spec,
    jobs,
    needs_ruby,
    package_spec,
    packages,
    run_tool,
)

BOSH = bosh_tools.CLI
pytestmark = [pytest.mark.slow, needs_ruby, bosh_tools.needs("cli")]


@pytest.fixture(scope="module")
def built(request, tmp_path_factory) -> tuple[Path, dict]:
    """The release tarball, and what inspect-local-release says of it."""
    assert BOSH is not None  # the module is skipped otherwise
    tarball, env = bakery_release(request, tmp_path_factory, BOSH)
    inspected = run_tool(
        env, "bosh", "inspect-local-release", str(tarball), "--json", cwd=tarball.parent
    )
    return tarball, json.loads(inspected)


def rows(inspected: dict, column: str) -> dict[str, dict]:
    """The rows of inspect-local-release's table with ``column``, by name."""
    (table,) = [table for table in inspected["Tables"] if column in table["Header"]]
    return {row[column].split("/")[0]: row for row in table["Rows"]}


def test_the_release_is_bakery_dev_built_from_the_export(built):
    _, inspected = built
    (release,) = rows(inspected, "name").values()
    assert release["name"] == "bakery"
    assert release["version"].startswith("0+dev.")


def test_the_tarball_holds_every_job_with_the_packages_its_spec_names(built):
    _, inspected = built
    found = rows(inspected, "job")
    assert sorted(found) == jobs()
    for job in jobs():
        assert found[job]["packages"].split("\n") == job_spec(job)["packages"]


def test_the_tarball_holds_every_package_with_its_dependencies(built):
    _, inspected = built
    found = rows(inspected, "package")
    assert sorted(found) == packages()
    for package in packages():
        listed = [name for name in found[package]["dependencies"].split("\n") if name]
        assert listed == package_spec(package)["dependencies"]


def test_the_bakery_package_carries_bakerys_wheel_with_its_package_data(built, tmp_path):
    tarball, _ = built
    with tarfile.open(tarball) as release:
        release.extract("packages/bakery.tgz", tmp_path, filter="data")
    with tarfile.open(tmp_path / "packages" / "bakery.tgz") as package:
        names = package.getnames()
    (wheel,) = [name for name in names if name.startswith("./bakery/bakery-")]
    assert wheel.endswith("-py3-none-any.whl")
    assert any(name.startswith("./bakery-wheels/flask-") for name in names)
    assert "./packaging" in names
