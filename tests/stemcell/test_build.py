"""``bakery stemcell build``: the tarball read back the way the director and the CPI read it,
built from a Debian-like image with the real amd64 bosh-agent and monit 5.2.5's source."""

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
from bakery.stemcell.architecture import elf_architecture
from bakery.stemcell.install import packaged_file
from bakery_cpi.cids import stemcell_name
from tests.stemcell.conftest import SHADOW_GROUP, debian_image, debian_root, needs_agent_and_monit
from tests.support import bosh_tools

TOOLS = (*REQUIRED_TOOLS, "debugfs", "pigz", "xz", "e2fsck", "gcc", "make", "bison", "flex")
#: The first bytes of an arm64 Linux program: enough for the build to refuse it early.
ARM64_HEADER = b"\x7fELF\x02\x01\x01" + bytes(11) + (0xB7).to_bytes(2, "little") + bytes(44)

pytestmark = [pytest.mark.tools(*TOOLS), needs_agent_and_monit]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("stemcell")


@pytest.fixture(scope="module")
def pi_os_xz(workdir: Path) -> Path:
    """A Debian-like image, xz-compressed like the downloads from raspberrypi.com."""
    raw = debian_image(workdir / "raspios.img")
    subprocess.run(["xz", "-T0", "-0", str(raw)], check=True)
    return workdir / "raspios.img.xz"


@pytest.fixture(scope="module")
def stemcell(workdir: Path, pi_os_xz: Path, agent: Path, monit_source: Path) -> Path:
    out = workdir / "bosh-bakery-raspios.tgz"
    build_stemcell(
        pi_os_xz, agent, out, monit_source=monit_source, name="bosh-bakery-raspios", version="1.0"
    )
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


def debugfs_cat(partition: Path, path: str) -> bytes:
    done = subprocess.run(["debugfs", "-R", f"cat {path}", str(partition)], capture_output=True)
    return done.stdout


def accounts_of(root: Path) -> dict[str, list[list[str]]]:
    return {
        name: [line.split(":") for line in (root / "etc" / name).read_text().splitlines()]
        for name in ("passwd", "group", "shadow", "gshadow")
    }


def entry(table: list[list[str]], name: str) -> list[str]:
    (found,) = [fields for fields in table if fields[0] == name]
    return found


@pytest.mark.root
def test_agent_json_reads_the_settings_file_bakery_writes(imported_root: Path):
    config = json.loads((imported_root / "var/vcap/bosh/agent.json").read_text())

    assert config["Infrastructure"]["Settings"]["Sources"] == [
        {"Type": "File", "SettingsPath": f"/{Settings.agent_settings_path}"}
    ]
    assert config["Infrastructure"]["Settings"]["UseRegistry"] is False


@pytest.mark.root
def test_agent_json_fits_a_pi_whose_root_is_nfs(imported_root: Path):
    linux = json.loads((imported_root / "var/vcap/bosh/agent.json").read_text())["Platform"][
        "Linux"
    ]

    assert linux["DevicePathResolutionType"] == "virtio"
    assert linux["ServiceManager"] == "systemd"
    # no root device to carve or grow: /var/vcap/data stays where the Pi has it
    assert linux["SkipDiskSetup"] is True
    assert linux["CreatePartitionIfNoEphemeralDisk"] is False
    assert linux["UseDefaultTmpDir"] is True
    # the agent partitions and formats its persistent disks itself
    assert linux["UsePreformattedPersistentDisk"] is False
    assert linux["BindMountPersistentDisk"] is False


@pytest.mark.root
def test_the_agent_binary_is_installed_and_started_at_boot(imported_root: Path, agent: Path):
    binary = imported_root / "var/vcap/bosh/bin/bosh-agent"
    wants = imported_root / "etc/systemd/system/multi-user.target.wants/bosh-agent.service"

    assert binary.read_bytes() == agent.read_bytes()
    assert stat.S_IMODE(binary.stat().st_mode) == 0o755
    assert (binary.stat().st_uid, binary.stat().st_gid) == (0, 0)
    assert os.readlink(wants) == "/etc/systemd/system/bosh-agent.service"
    service = (imported_root / "etc/systemd/system/bosh-agent.service").read_text()
    assert (
        "ExecStart=/var/vcap/bosh/bin/bosh-agent -P ubuntu -C /var/vcap/bosh/agent.json\n"
        in service
    )
    assert "After=network-online.target bakery-disk-agent.service\n" in service


@pytest.mark.root
def test_the_scripts_the_agent_runs_at_start_are_installed(imported_root: Path):
    for name in ("bosh-agent-rc", "bosh-start-logging-and-auditing"):
        script = imported_root / "var/vcap/bosh/bin" / name
        assert script.read_bytes() == packaged_file(name)
        assert stat.S_IMODE(script.stat().st_mode) == 0o755
    hooks = imported_root / "var/vcap/bosh/etc/agent-rc.d"
    hooks.mkdir(parents=True)
    (hooks / "10-mark").write_text(f"#!/bin/sh\ntouch {hooks}/ran\n")
    os.chmod(hooks / "10-mark", 0o755)
    rc = (imported_root / "var/vcap/bosh/bin/bosh-agent-rc").read_text()
    rc = rc.replace("/var/vcap/bosh/etc/agent-rc.d", str(hooks))  # run against this root

    subprocess.run(["sh", "-c", rc], check=True)

    assert (hooks / "ran").exists()


@pytest.mark.root
def test_monit_5_2_5_is_compiled_for_the_image_and_set_up_as_the_agent_expects(
    imported_root: Path,
):
    monit = imported_root / "var/vcap/bosh/bin/monit"
    assert stat.S_IMODE(monit.stat().st_mode) == 0o755
    assert elf_architecture(monit.read_bytes()[:64]).name == "amd64"
    version = subprocess.run([monit, "-V"], capture_output=True, text=True, check=True).stdout
    assert version.startswith("This is Monit version 5.2.5\n")

    monitrc = imported_root / "var/vcap/bosh/etc/monitrc"
    assert stat.S_IMODE(monitrc.stat().st_mode) == 0o700  # monit refuses a readable one
    text = monitrc.read_text()
    assert "set httpd port 2822 and use address 127.0.0.1\n" in text
    assert "allow cleartext /var/vcap/monit/monit.user\n" in text
    assert "include /var/vcap/monit/job/*.monitrc\n" in text
    assert (imported_root / "var/vcap/monit/empty.monitrc").read_bytes() == b""


@pytest.mark.root
def test_monit_is_a_service_the_agent_starts_and_reloads_without_killing_jobs(
    imported_root: Path,
):
    unit = (imported_root / "etc/systemd/system/monit.service").read_text()

    assert "ExecStart=/var/vcap/bosh/bin/monit -I -c /var/vcap/bosh/etc/monitrc\n" in unit
    assert "KillMode=process\n" in unit
    # not enabled: the agent starts it once it has set the VM up
    assert not list(imported_root.glob("etc/systemd/system/*.wants/monit.service"))


@pytest.mark.root
def test_vcap_and_the_agents_groups_are_added_as_useradd_would(imported_root: Path):
    accounts = accounts_of(imported_root)

    vcap = entry(accounts["passwd"], "vcap")
    assert vcap == ["vcap", "x", "1001", "1001", "BOSH System User", "/home/vcap", "/bin/bash"]
    assert entry(accounts["group"], "vcap")[:3] == ["vcap", "x", "1001"]  # pi has 1000
    assert entry(accounts["shadow"], "vcap")[1] == "*"  # locked until the agent sets one
    for name in ("admin", "bosh_sudoers", "bosh_sshers", "syslog"):
        group = entry(accounts["group"], name)
        assert 100 <= int(group[2]) < 999  # system groups, below systemd-journal's 999
        assert entry(accounts["gshadow"], name)[:2] == [name, "!"]
    for name in ("admin", "bosh_sudoers", "bosh_sshers", "adm", "audio", "video", "dialout"):
        assert "vcap" in entry(accounts["group"], name)[3].split(",")
        assert "vcap" in entry(accounts["gshadow"], name)[3].split(",")
    assert entry(accounts["group"], "adm")[3] == "pi,vcap"
    assert entry(accounts["passwd"], "pi")[2] == "1000"  # the rest is kept as it was
    assert len({fields[2] for fields in accounts["group"]}) == len(accounts["group"])
    sudoers = imported_root / "etc/sudoers.d/bosh"
    assert "%bosh_sudoers ALL=(ALL) NOPASSWD: ALL\n" in sudoers.read_text()
    assert stat.S_IMODE(sudoers.stat().st_mode) == 0o440


@pytest.mark.root
def test_the_shadow_files_keep_their_owner_and_mode(imported_root: Path):
    for name in ("shadow", "gshadow"):
        info = (imported_root / "etc" / name).stat()
        assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o640, 0, SHADOW_GROUP)


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


def test_the_cli_builds_a_stemcell_from_a_stemcells_own_image(
    stemcell: Path, agent: Path, monit_source: Path, tmp_path: Path
):
    """Every file exists already: each is replaced, no command fails on an existing one,
    and vcap is not added twice."""
    image = tmp_path / "image.gz"
    image.write_bytes(members(stemcell)["image"])
    newer = tmp_path / "newer-agent"
    newer.write_bytes(agent.read_bytes() + b"newer")
    out = tmp_path / "again.tgz"
    args = ["stemcell", "build", str(image), "--agent", str(newer), "--monit-source"]
    args += [str(monit_source), "--name", "again", "--version", "7", "--api-version", "2"]

    result = CliRunner().invoke(main, [*args, "-o", str(out)])

    assert result.exit_code == 0, result.output
    assert "api_version: 2\n" in members(out)["stemcell.MF"].decode()
    before = tmp_path / "before.ext4"
    before.write_bytes(root_partition(unzip(members(stemcell)["image"])))
    after = tmp_path / "after.ext4"
    after.write_bytes(root_partition(unzip(members(out)["image"])))
    assert debugfs_cat(after, "/var/vcap/bosh/bin/bosh-agent") == newer.read_bytes()
    for path in ("/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow"):
        assert debugfs_cat(after, path) == debugfs_cat(before, path)
    assert subprocess.run(["e2fsck", "-f", "-n", str(after)], capture_output=True).returncode == 0


@pytest.mark.tools("aarch64-linux-gnu-gcc")
@bosh_tools.needs("agent_arm64")
def test_a_stemcell_for_a_64_bit_pi_gets_monit_cross_compiled_for_arm64(
    monit_source: Path, tmp_path: Path
):
    arm64_program = Path("/usr/aarch64-linux-gnu/lib/libc.so.6")
    image = debian_image(tmp_path / "raspios-arm64.img", program=arm64_program)
    out = tmp_path / "arm64.tgz"

    build_stemcell(
        image, bosh_tools.AGENT_ARM64, out, monit_source=monit_source, name="pi", version="1"
    )

    root = tmp_path / "root.ext4"
    root.write_bytes(root_partition(unzip(members(out)["image"])))
    monit = debugfs_cat(root, "/var/vcap/bosh/bin/monit")
    assert elf_architecture(monit[:64]).name == "arm64"
    assert debugfs_cat(root, "/var/vcap/bosh/bin/bosh-agent") == bosh_tools.AGENT_ARM64.read_bytes()


def refused(match: str, image: Path, agent: Path, monit_source: Path, out: Path) -> None:
    """The build is refused with `match`, and nothing is left beside `out`."""
    before = sorted(out.parent.iterdir())
    with pytest.raises(StemcellError, match=match):
        build_stemcell(image, agent, out, monit_source=monit_source, name="x", version="1")
    assert sorted(out.parent.iterdir()) == before


def test_an_agent_for_another_cpu_than_the_images_is_refused(
    pi_os_xz: Path, monit_source: Path, tmp_path: Path
):
    arm64 = tmp_path / "bosh-agent-arm64"
    arm64.write_bytes(ARM64_HEADER)
    script = tmp_path / "bosh-agent.sh"
    script.write_bytes(b"#!/bin/sh\nexit 0\n")
    out = tmp_path / "out" / "x.tgz"
    out.parent.mkdir()

    refused(
        "the image is for amd64 but the bosh-agent for arm64", pi_os_xz, arm64, monit_source, out
    )
    refused("is not a bosh-agent executable for Linux", pi_os_xz, script, monit_source, out)


def test_an_image_without_accounts_or_programs_is_refused(
    agent: Path, monit_source: Path, tmp_path: Path
):
    bare = build_sd_image(tmp_path / "bare.img", root_dir=populate_root(tmp_path / "bare"))
    tree = debian_root(tmp_path / "no-gshadow")
    (tree / "etc/gshadow").unlink()
    no_gshadow = build_sd_image(tmp_path / "no-gshadow.img", root_dir=tree)
    out = tmp_path / "out" / "x.tgz"
    out.parent.mkdir()

    refused("cannot tell what CPU the image is for", bare, agent, monit_source, out)
    refused(
        "the image's root has no /etc/gshadow: not a Debian root",
        no_gshadow,
        agent,
        monit_source,
        out,
    )


def test_monit_source_of_another_version_is_refused_before_compiling(
    pi_os_xz: Path, agent: Path, tmp_path: Path
):
    tree = tmp_path / "monit-5.33.0"
    tree.mkdir()
    (tree / "configure").write_text("#!/bin/sh\nPACKAGE_VERSION='5.33.0'\nexit 1\n")
    (tree / "monit.1").write_text("")
    newer = tmp_path / "monit-5.33.0.tar.gz"
    with tarfile.open(newer, "w:gz") as tar:
        tar.add(tree, arcname=tree.name)
    out = tmp_path / "out" / "x.tgz"
    out.parent.mkdir()

    refused("is monit 5.33.0, not 5.2.5: the bosh-agent drives", pi_os_xz, agent, newer, out)
    refused("is not a readable source tarball", pi_os_xz, agent, pi_os_xz, out)


def test_a_symlink_where_the_agent_directory_belongs_is_refused(
    agent: Path, monit_source: Path, tmp_path: Path
):
    tree = debian_root(tmp_path / "tree")
    (tree / "var/vcap").symlink_to("/tmp")
    image = build_sd_image(tmp_path / "linked.img", root_dir=tree)
    out = tmp_path / "out" / "x.tgz"
    out.parent.mkdir()

    refused("/var/vcap in the image is a symlink", image, agent, monit_source, out)


def test_an_image_bakery_would_not_import_is_refused(
    agent: Path, monit_source: Path, tmp_path: Path
):
    junk = tmp_path / "junk.img"
    junk.write_bytes(b"not an sd card" * 1000)

    refused("not a Raspberry Pi OS image", junk, agent, monit_source, tmp_path / "out.tgz")


@pytest.mark.parametrize(
    "arguments",
    [
        {"name": "../etc", "version": "1"},
        {"name": "ok", "version": "1 2"},
        {"name": "ok", "version": "1", "api_version": 1},
        {"name": "ok", "version": "1", "operating_system": "a'b"},
    ],
)
def test_bad_arguments_are_refused_before_any_work(
    arguments, agent: Path, monit_source: Path, tmp_path: Path
):
    with pytest.raises(StemcellError):
        build_stemcell(
            tmp_path / "never-read.img",
            agent,
            tmp_path / "out.tgz",
            monit_source=monit_source,
            **arguments,
        )


def test_the_cli_reports_a_bad_image_in_one_line(agent: Path, monit_source: Path, tmp_path: Path):
    junk = tmp_path / "junk.img"
    junk.write_bytes(b"\0" * 4096)
    args = ["stemcell", "build", str(junk), "--agent", str(agent), "--name", "x", "--version", "1"]
    args += ["--monit-source", str(monit_source)]

    result = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "out.tgz")])

    assert result.exit_code == 1
    assert result.output.startswith("Error: not a Raspberry Pi OS image")
    assert len(result.output.strip().splitlines()) == 1
