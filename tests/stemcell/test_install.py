"""Installing the disk agent into a root tree on the host (what a seasoning step would do
for bakeforms that are not stemcells), and the agent script's own hygiene."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from bakery.roots import SeasoningError
from bakery.stemcell import install_disk_agent
from bakery.stemcell.install import packaged_file

SCRIPT = "usr/local/sbin/bakery-disk-agent"
TIMER_LINK = "etc/systemd/system/timers.target.wants/bakery-disk-agent.timer"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root/etc").mkdir(parents=True)
    return tmp_path / "root"


def test_install_puts_the_script_and_units_in_place_and_enables_the_timer(root: Path):
    install_disk_agent(root)

    script = root / SCRIPT
    assert script.read_bytes() == packaged_file("bakery-disk-agent")
    assert stat.S_IMODE(script.stat().st_mode) == 0o755
    unit_dir = root / "etc/systemd/system"
    assert (unit_dir / "bakery-disk-agent.service").read_bytes() == packaged_file(
        "bakery-disk-agent.service"
    )
    assert "OnUnitActiveSec=5s" in (unit_dir / "bakery-disk-agent.timer").read_text()
    assert os.readlink(root / TIMER_LINK) == "/etc/systemd/system/bakery-disk-agent.timer"


def test_the_service_runs_the_installed_script(root: Path):
    install_disk_agent(root)

    service = (root / "etc/systemd/system/bakery-disk-agent.service").read_text()

    assert f"ExecStart=/{SCRIPT}\n" in service
    assert "Type=oneshot" in service


def test_installing_again_replaces_symlinks_without_following_them(root: Path, tmp_path: Path):
    host_file = tmp_path / "host-file"
    host_file.write_text("must stay\n")
    (root / "usr/local/sbin").mkdir(parents=True)
    (root / SCRIPT).symlink_to(host_file)
    (root / TIMER_LINK).parent.mkdir(parents=True)
    (root / TIMER_LINK).symlink_to(host_file)

    install_disk_agent(root)
    install_disk_agent(root)

    assert host_file.read_text() == "must stay\n"
    assert not (root / SCRIPT).is_symlink()
    assert os.readlink(root / TIMER_LINK) == "/etc/systemd/system/bakery-disk-agent.timer"
    assert sorted(p.name for p in (root / TIMER_LINK).parent.iterdir()) == [
        "bakery-disk-agent.timer"
    ]


def test_a_symlinked_directory_in_the_root_is_refused(root: Path, tmp_path: Path):
    host_dir = tmp_path / "host-systemd"
    host_dir.mkdir()
    (root / "etc/systemd").symlink_to(host_dir)

    with pytest.raises(SeasoningError):
        install_disk_agent(root)

    assert list(host_dir.iterdir()) == []


def test_a_directory_where_the_timer_link_goes_is_refused(root: Path):
    (root / TIMER_LINK / "inside").mkdir(parents=True)

    with pytest.raises(SeasoningError):
        install_disk_agent(root)

    assert (root / TIMER_LINK / "inside").is_dir()


def test_the_disk_agent_is_shellcheck_clean(tmp_path: Path):
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed")
    script = tmp_path / "bakery-disk-agent"
    script.write_bytes(packaged_file("bakery-disk-agent"))

    result = subprocess.run(["shellcheck", "--shell=sh", str(script)], capture_output=True)

    assert result.returncode == 0, result.stdout.decode()
