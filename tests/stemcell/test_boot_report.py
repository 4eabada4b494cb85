"""The boot report a bake's root carries, run here with the real curl against a real
``bakery serve``: the files Bakery wrote into the root are all it needs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from bakery.stemcell.install import API_URL_FILE, packaged_file
from tests.conftest import upload_raspios
from tests.stemcell.test_install import systemd_dependencies

pytestmark = pytest.mark.tools("curl")


@pytest.fixture
def baked(live_server, sd_image_file):
    """A live server, and a Pi at 127.0.0.1 (where curl's requests come from) baked."""
    server = live_server()
    upload_raspios(server, sd_image_file)
    api = server.session()
    assert api.post(f"{server.url}/api/v1/pis", json={"serial": "0000b007", "ip": "127.0.0.1"}).ok
    made = api.post(f"{server.url}/api/v1/bakes", json={"bakeform": "raspios"}).json()
    return server, made


def run_report(tmp_path: Path, root: Path, secret: Path) -> subprocess.CompletedProcess:
    script = tmp_path / "bakery-boot-report"
    script.write_bytes(packaged_file("bakery-boot-report"))
    env = {
        "PATH": os.environ["PATH"],
        "BAKERY_API_URL_FILE": str(root / API_URL_FILE),
        "BAKERY_SECRET_FILE": str(secret),
    }
    return subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True)


def messages(server, serial: str) -> list[str]:
    events = server.session().get(f"{server.url}/api/v1/pis/{serial}/events").json()
    return [event["message"] for event in events]


def test_the_report_tells_bakery_the_pis_userspace_is_up(baked, tmp_path):
    server, made = baked
    root = server.root / "bakes" / made["id"] / "root"

    first = run_report(tmp_path, root, root / "var/lib/bakery/secret")
    second = run_report(tmp_path, root, root / "var/lib/bakery/secret")

    assert (first.returncode, second.returncode) == (0, 0), first.stderr
    ups = [m for m in messages(server, "0000b007") if m.startswith("userspace up ")]
    assert len(ups) == 1, "the second report is a heartbeat"
    pi = server.session().get(f"{server.url}/api/v1/pis/0000b007").json()
    assert pi["boot"] == "up" and pi["last_seen"]


def test_a_report_with_a_wrong_secret_fails_and_records_nothing(baked, tmp_path):
    server, made = baked
    root = server.root / "bakes" / made["id"] / "root"
    wrong = tmp_path / "secret"
    wrong.write_text("not-the-secret\n")

    result = run_report(tmp_path, root, wrong)

    assert result.returncode == 1 and "failed" in result.stderr
    assert not [m for m in messages(server, "0000b007") if m.startswith("userspace up")]


@pytest.mark.tools("systemd-analyze")
def test_every_bake_runs_the_report_at_boot_and_every_minute(baked):
    server, made = baked
    root = server.root / "bakes" / made["id"] / "root"
    unit_dir = root / "etc/systemd/system"

    units, said = systemd_dependencies(unit_dir, ["bakery-boot-report.service"])

    assert "multi-user.target" in units["bakery-boot-report.service"]["WantedBy"]
    assert "network-online.target" in units["bakery-boot-report.service"]["After"]
    assert (unit_dir / "timers.target.wants/bakery-boot-report.timer").is_symlink()
    assert (root / API_URL_FILE).read_text() == f"{server.url}\n"
    assert "ordering cycle" not in said.lower()
