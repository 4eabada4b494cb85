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
SERVICE_LINK = "etc/systemd/system/multi-user.target.wants/bakery-disk-agent.service"
#: Stands in for the unit containerd's package installs (its After= lines are the real one's).
CONTAINERD_UNIT = """[Unit]
Description=containerd container runtime (stand-in)
After=network.target local-fs.target dbus.service

[Service]
ExecStart=/usr/bin/containerd

[Install]
WantedBy=multi-user.target
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root/etc").mkdir(parents=True)
    return tmp_path / "root"


def test_install_puts_the_script_and_units_in_place_and_enables_service_and_timer(root: Path):
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
    assert os.readlink(root / SERVICE_LINK) == "/etc/systemd/system/bakery-disk-agent.service"


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


def systemd_dependencies(unit_dir: Path, units: list[str]) -> tuple[dict[str, dict], str]:
    """How systemd itself reads ``units`` from the root's ``unit_dir`` beside the host's own
    targets: ``{unit: {"After": {...}, "WantedBy": {...}, ...}}`` from the unit dump that
    ``systemd-analyze verify`` prints, and what it said on stderr."""
    result = subprocess.run(
        ["systemd-analyze", "verify", *(str(unit_dir / unit) for unit in units)],
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "debug", "SYSTEMD_UNIT_PATH": f"{unit_dir}:"},
        capture_output=True,
        text=True,
    )
    dependencies: dict[str, dict] = {}
    current: dict = {}
    for line in result.stdout.splitlines():
        if line.startswith("\t-> Unit "):
            current = dependencies.setdefault(line.split()[2].rstrip(":"), {})
        elif line.startswith("\t\t"):
            key, _, value = line.strip().partition(": ")
            current.setdefault(key, set()).add(value.split(" (")[0])
    return dependencies, result.stderr


@pytest.mark.tools("systemd-analyze")
def test_at_boot_systemd_runs_the_disk_agent_before_containerd(root: Path):
    install_disk_agent(root)
    unit_dir = root / "etc/systemd/system"
    (unit_dir / "containerd.service").write_text(CONTAINERD_UNIT)
    (unit_dir / "multi-user.target.wants/containerd.service").symlink_to(
        "/etc/systemd/system/containerd.service"
    )

    units, said = systemd_dependencies(
        unit_dir, ["containerd.service", "bakery-disk-agent.service"]
    )

    agent, containerd = units["bakery-disk-agent.service"], units["containerd.service"]
    assert "multi-user.target" in agent["WantedBy"], "the disk agent must run at every boot"
    assert "bakery-disk-agent.service" in containerd["After"]
    assert {"bosh-agent.service", "k3s.service", "k3s-agent.service"} <= agent["Before"]
    assert "network-online.target" in agent["After"]
    assert "ordering cycle" not in said.lower()
