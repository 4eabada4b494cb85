"""``bakery stemcell build``: the tarball read back the way the director and the CPI read it."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from bakery.cli import main
from bakery.config import Settings
from bakery.images import import_image
from bakery.images.layout import choose_partitions, parse_mbr
from bakery.images.receive import detect_compression
from bakery.sim.image import REQUIRED_TOOLS, build_sd_image, populate_root
from bakery.stemcell import StemcellError, build_stemcell
from bakery.stemcell.install import packaged_file
from bakery_cpi.cids import stemcell_name

TOOLS = (*REQUIRED_TOOLS, "debugfs", "pigz", "xz", "e2fsck")
FAKE_AGENT = b"#!/bin/sh\necho 'fake bosh-agent' \"$@\"\n"

pytestmark = pytest.mark.tools(*TOOLS)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("stemcell")


@pytest.fixture(scope="module")
def agent(workdir: Path) -> Path:
    path = workdir / "bosh-agent"
    path.write_bytes(FAKE_AGENT)
    return path


@pytest.fixture(scope="module")
def pi_os_xz(workdir: Path) -> Path:
    """A Pi OS-like image, xz-compressed like the downloads from raspberrypi.com."""
    raw = build_sd_image(workdir / "raspios.img")
    subprocess.run(["xz", "-T0", "-0", str(raw)], check=True)
    return workdir / "raspios.img.xz"


@pytest.fixture(scope="module")
def stemcell(workdir: Path, pi_os_xz: Path, agent: Path) -> Path:
    out = workdir / "bosh-bakery-raspios.tgz"
    build_stemcell(pi_os_xz, agent, out, name="bosh-bakery-raspios", version="1.0")
    return out


def members(tarball: Path) -> dict[str, bytes]:
    with tarfile.open(tarball, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def root_partition(image: bytes) -> bytes:
    raw = io.BytesIO(image)
    layout = choose_partitions(parse_mbr(raw.read(512)), len(image))
    return image[layout.root.offset : layout.root.end]


def unzip(data: bytes) -> bytes:
    return subprocess.run(["pigz", "-dc"], input=data, capture_output=True, check=True).stdout


@pytest.fixture(scope="module")
def imported_root(stemcell: Path, tmp_path_factory) -> Path:
    """The stemcell's image imported as a bakeform, as the CPI's create_stemcell does."""
    staging = tmp_path_factory.mktemp("bakeform")
    (staging / "root").mkdir()
    with tarfile.open(stemcell, "r:gz") as tar:
        import_image(tar.extractfile("image"), staging)
    return staging / "root"


def test_the_tarball_holds_image_and_manifest(stemcell: Path):
    with tarfile.open(stemcell, "r:gz") as tar:
        entries = {m.name: m for m in tar.getmembers()}

    assert sorted(entries) == ["image", "stemcell.MF"]
    assert all(m.isfile() for m in entries.values())


def test_the_manifest_sha1_is_that_of_the_image(stemcell: Path):
    files = members(stemcell)

    sha1 = hashlib.sha1(files["image"], usedforsecurity=False).hexdigest()

    assert f"sha1: '{sha1}'\n" in files["stemcell.MF"].decode()


def test_the_manifest_is_the_yaml_the_director_validates(stemcell: Path):
    ruby = shutil.which("ruby")
    if ruby is None:
        pytest.skip("ruby (the director's YAML parser) not installed")
    files = members(stemcell)
    to_json = "require 'yaml'; require 'json'; puts JSON.dump(YAML.safe_load(STDIN.read))"

    ruby_run = subprocess.run(
        [ruby, "-e", to_json], input=files["stemcell.MF"], capture_output=True, check=True
    )
    parsed = json.loads(ruby_run.stdout)

    assert parsed == {
        "name": "bosh-bakery-raspios",
        "version": "1.0",
        "api_version": 3,
        "bosh_protocol": "1",
        "sha1": hashlib.sha1(files["image"], usedforsecurity=False).hexdigest(),
        "operating_system": "raspios",
        "stemcell_formats": ["bakery-raw"],
        "cloud_properties": {"name": "bosh-bakery-raspios", "version": "1.0"},
    }
    # what the CPI names the bakeform: the same stemcell uploaded again replaces it
    assert stemcell_name(parsed["cloud_properties"]) == "bosh-bakery-raspios-1.0"


def test_the_image_is_gzipped_and_its_root_filesystem_is_clean(stemcell: Path, tmp_path: Path):
    image = members(stemcell)["image"]
    assert detect_compression(image) == "gz"
    root = tmp_path / "root.ext4"
    root.write_bytes(root_partition(unzip(image)))

    check = subprocess.run(["e2fsck", "-f", "-n", str(root)], capture_output=True, text=True)

    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.root
def test_agent_json_reads_the_settings_file_bakery_writes(imported_root: Path):
    config = json.loads((imported_root / "var/vcap/bosh/agent.json").read_text())

    assert config["Infrastructure"]["Settings"]["Sources"] == [
        {"Type": "File", "SettingsPath": f"/{Settings.agent_settings_path}"}
    ]
    linux = config["Platform"]["Linux"]
    assert linux["DevicePathResolutionType"] == "virtio"
    assert linux["CreatePartitionIfNoEphemeralDisk"] is False


@pytest.mark.root
def test_the_agent_binary_is_installed_and_started_at_boot(imported_root: Path):
    binary = imported_root / "var/vcap/bosh/bin/bosh-agent"
    wants = imported_root / "etc/systemd/system/multi-user.target.wants/bosh-agent.service"

    assert binary.read_bytes() == FAKE_AGENT
    assert stat.S_IMODE(binary.stat().st_mode) == 0o755
    assert (binary.stat().st_uid, binary.stat().st_gid) == (0, 0)
    assert os.readlink(wants) == "/etc/systemd/system/bosh-agent.service"
    service = (imported_root / "etc/systemd/system/bosh-agent.service").read_text()
    assert "ExecStart=/var/vcap/bosh/bin/bosh-agent " in service


@pytest.mark.root
def test_the_disk_agent_is_installed_with_its_timer_enabled(imported_root: Path):
    script = imported_root / "usr/local/sbin/bakery-disk-agent"
    timer = imported_root / "etc/systemd/system/timers.target.wants/bakery-disk-agent.timer"

    assert script.read_bytes() == packaged_file("bakery-disk-agent")
    assert stat.S_IMODE(script.stat().st_mode) == 0o755
    assert os.readlink(timer) == "/etc/systemd/system/bakery-disk-agent.timer"
    assert (imported_root / "etc/systemd/system/bakery-disk-agent.timer").is_file()


@pytest.mark.root
def test_the_rest_of_the_os_is_untouched(imported_root: Path):
    assert (imported_root / "etc/hostname").read_text() == "raspberrypi\n"
    assert os.readlink(imported_root / "bin") == "usr/bin"
    assert stat.S_IMODE((imported_root / "usr/bin/sudo").stat().st_mode) == 0o4755


def test_a_stemcell_image_can_be_built_into_a_stemcell_again(
    stemcell: Path, agent: Path, tmp_path: Path
):
    """Every file exists already: each is replaced, no command fails on an existing one."""
    image = tmp_path / "image.gz"
    image.write_bytes(members(stemcell)["image"])
    newer = tmp_path / "newer-agent"
    newer.write_bytes(b"#!/bin/sh\necho newer agent\n")

    build_stemcell(image, newer, tmp_path / "again.tgz", name="again", version="2")

    root = tmp_path / "root.ext4"
    root.write_bytes(root_partition(unzip(members(tmp_path / "again.tgz")["image"])))
    agent_bytes = subprocess.run(
        ["debugfs", "-R", "cat /var/vcap/bosh/bin/bosh-agent", str(root)],
        capture_output=True,
        check=True,
    ).stdout
    assert agent_bytes == b"#!/bin/sh\necho newer agent\n"
    assert subprocess.run(["e2fsck", "-f", "-n", str(root)], capture_output=True).returncode == 0


def test_a_symlink_where_the_agent_directory_belongs_is_refused(agent: Path, tmp_path: Path):
    tree = populate_root(tmp_path / "tree")
    (tree / "var/vcap").symlink_to("/tmp")
    image = build_sd_image(tmp_path / "linked.img", root_dir=tree)

    with pytest.raises(StemcellError, match="/var/vcap in the image is a symlink"):
        build_stemcell(image, agent, tmp_path / "out.tgz", name="x", version="1")

    assert not (tmp_path / "out.tgz").exists()


def test_an_image_bakery_would_not_import_is_refused(agent: Path, tmp_path: Path):
    junk = tmp_path / "junk.img"
    junk.write_bytes(b"not an sd card" * 1000)

    with pytest.raises(StemcellError, match="not a Raspberry Pi OS image"):
        build_stemcell(junk, agent, tmp_path / "out.tgz", name="x", version="1")

    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.img"]


@pytest.mark.parametrize(
    "arguments",
    [
        {"name": "../etc", "version": "1"},
        {"name": "ok", "version": "1 2"},
        {"name": "ok", "version": "1", "api_version": 1},
        {"name": "ok", "version": "1", "operating_system": "a'b"},
    ],
)
def test_bad_arguments_are_refused_before_any_work(arguments, agent: Path, tmp_path: Path):
    with pytest.raises(StemcellError):
        build_stemcell(tmp_path / "never-read.img", agent, tmp_path / "out.tgz", **arguments)


def test_the_cli_builds_a_stemcell(pi_os_xz: Path, agent: Path, tmp_path: Path):
    out = tmp_path / "cli.tgz"
    args = ["stemcell", "build", str(pi_os_xz), "--agent", str(agent)]
    args += ["--name", "bosh-bakery-raspios", "--version", "7", "--api-version", "2"]
    args += ["-o", str(out)]

    result = CliRunner().invoke(main, args)

    assert result.exit_code == 0, result.output
    assert "api_version: 2\n" in members(out)["stemcell.MF"].decode()


def test_the_cli_reports_a_bad_image_in_one_line(agent: Path, tmp_path: Path):
    junk = tmp_path / "junk.img"
    junk.write_bytes(b"\0" * 4096)
    args = ["stemcell", "build", str(junk), "--agent", str(agent), "--name", "x", "--version", "1"]

    result = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "out.tgz")])

    assert result.exit_code == 1
    assert result.output.startswith("Error: not a Raspberry Pi OS image")
    assert len(result.output.strip().splitlines()) == 1
