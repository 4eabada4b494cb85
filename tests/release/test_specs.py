"""The release directory passes what ``bosh create-release`` and the director's
``upload-release`` check (bosh-cpi.md §5.1-5.2), without needing either."""

from __future__ import annotations

import re
import subprocess
from pathlib import PurePosixPath

import pytest

from .bosh import (
    FETCH_BLOBS,
    RELEASE,
    SRC,
    glob_matches,
    job_spec,
    jobs,
    load_yaml,
    needs_ruby,
    package_spec,
    packages,
)

pytestmark = needs_ruby
BOSH_NAME = re.compile(r"[-0-9A-Za-z_+.]+")


def test_release_is_named_bakery():
    final = load_yaml(RELEASE / "config" / "final.yml")
    assert final["name"] == "bakery"
    assert "final_name" not in final


def test_blobs_yml_exists_and_is_a_mapping():
    assert isinstance(load_yaml(RELEASE / "config" / "blobs.yml"), dict)


@pytest.mark.parametrize("job", jobs())
def test_job_spec_is_named_after_its_directory(job):
    assert job_spec(job)["name"] == job
    assert BOSH_NAME.fullmatch(job)


@pytest.mark.parametrize("job", jobs())
def test_every_job_template_exists(job):
    for template in job_spec(job)["templates"]:
        assert (RELEASE / "jobs" / job / "templates" / template).is_file(), template


@pytest.mark.parametrize("job", jobs())
def test_every_job_has_a_monit_file(job):
    assert (RELEASE / "jobs" / job / "monit").is_file()


@pytest.mark.parametrize("job", jobs())
def test_job_properties_are_a_mapping_of_described_properties(job):
    properties = job_spec(job)["properties"]
    assert isinstance(properties, dict)
    for name, definition in properties.items():
        assert definition.get("description"), f"{job}: property {name} has no description"


@pytest.mark.parametrize("job", jobs())
def test_every_package_a_job_names_exists(job):
    for package in job_spec(job)["packages"]:
        assert (RELEASE / "packages" / package / "spec").is_file(), package


@pytest.mark.parametrize("package", packages())
def test_package_spec_is_named_after_its_directory(package):
    assert package_spec(package)["name"] == package
    assert BOSH_NAME.fullmatch(package)


@pytest.mark.parametrize("package", packages())
def test_every_package_has_packaging_that_its_files_do_not_list(package):
    assert (RELEASE / "packages" / package / "packaging").is_file()
    assert not {"packaging", "pre_packaging"} & set(package_spec(package)["files"])


@pytest.mark.parametrize("package", packages())
def test_every_package_dependency_exists(package):
    for dependency in package_spec(package)["dependencies"]:
        assert (RELEASE / "packages" / dependency / "spec").is_file(), dependency


@pytest.mark.parametrize("package", packages())
def test_every_file_glob_matches_the_sources_or_a_recorded_blob(package):
    """create-release fails with "Missing files for pattern" otherwise. Blobs come from
    scripts/fetch-blobs (recorded in config/blobs.yml); before it has run, only the
    globs meant for src/ can be checked."""
    recorded = load_yaml(RELEASE / "config" / "blobs.yml") or {}
    for pattern in package_spec(package)["files"]:
        in_src = glob_matches(pattern, [SRC])
        in_blobs = [blob for blob in recorded if PurePosixPath(blob).match(pattern)]
        if not in_src and not recorded:
            continue
        assert in_src or in_blobs, f"{package}: nothing matches {pattern!r}"


#: Which package compiles each source scripts/fetch-blobs pins (``<NAME>_ORIG=...``).
SOURCES_OF = {
    "python3": ("PYTHON", "SQLITE"),
    "dnsmasq": ("DNSMASQ",),
    "mtools": ("MTOOLS",),
    "nfs-ganesha": ("GANESHA", "NTIRPC", "LIBURCU", "ATTR", "ACL"),
}


def pinned_sources() -> dict[str, str]:
    """Each pinned source's name (``GANESHA``) and file name, as fetch-blobs saves it."""
    return dict(re.findall(r"^([A-Z]+)_ORIG=\S*/(\S+)$", FETCH_BLOBS.read_text(), re.M))


def test_every_pinned_source_is_compiled_by_a_package():
    assert sorted(pinned_sources()) == sorted(n for names in SOURCES_OF.values() for n in names)


@pytest.mark.parametrize("package", sorted(SOURCES_OF))
def test_package_files_take_the_sources_fetch_blobs_pins(package):
    """The tarballs scripts/fetch-blobs fetches (and verifies) are the ones the package
    compiles: a name the spec's globs miss fails create-release, and a glob no pinned
    source matches would take whatever lies in blobs/."""
    pins = pinned_sources()
    blobs = [PurePosixPath(package, pins[name]) for name in SOURCES_OF[package]]
    patterns = package_spec(package)["files"]
    for blob in blobs:
        assert any(blob.match(pattern) for pattern in patterns), blob
    for pattern in patterns:
        assert [blob for blob in blobs if blob.match(pattern)], pattern


def test_the_bakery_package_is_bakerys_wheel_and_its_pinned_dependencies():
    """Built from the wheel (package data included), not from a glob of sources."""
    assert package_spec("bakery")["files"] == ["bakery/bakery-*.whl", "bakery-wheels/*.whl"]
    pins = re.findall(r"^(\S+)==\S+ --hash=sha256:[0-9a-f]{64}$", FETCH_BLOBS.read_text(), re.M)
    assert {"flask", "gunicorn", "peewee", "psycopg2_binary", "prometheus_client"} <= set(pins)


@pytest.mark.tools("shellcheck")
def test_release_scripts_are_shellcheck_clean():
    scripts = [
        *sorted((RELEASE / "packages").glob("*/packaging")),
        RELEASE / "jobs" / "bakery_cpi" / "templates" / "cpi.erb",
        FETCH_BLOBS,
    ]
    result = subprocess.run(
        ["shellcheck", "--shell=bash", *map(str, scripts)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout
