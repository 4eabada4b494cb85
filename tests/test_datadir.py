"""The data dir is Bakery's alone: a local user can neither run a root's setuid programs
nor read through its device nodes, what the service makes is private, the Pis' roots
keep their own modes, and a data dir others can enter stops the start with one line."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from bakery.datadir import mount_warning
from bakery.sim.image import build_sd_image, populate_root
from tests.conftest import upload_raspios

NOBODY = 65534
pytestmark = [pytest.mark.root, pytest.mark.tools("setpriv", "mkfs.ext4", "mkfs.vfat", "debugfs")]


@pytest.fixture
def reachable_dir():
    """A directory every local user may enter, as /srv or /var/lib are: the data dir's
    own mode is then all that stands between a local user and its roots."""
    path = Path(tempfile.mkdtemp(prefix="bakery-reachable-", dir="/var/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.fixture
def image_with_setuid_and_device(tmp_path) -> Path:
    """A Pi image whose root holds a setuid-root copy of ``id`` and a world-readable
    device node, as real Pi OS roots hold sudo and /dev entries."""
    root = populate_root(tmp_path / "rootfs")
    shutil.copy(shutil.which("id") or "/usr/bin/id", root / "usr/bin/suid-id")
    os.chmod(root / "usr/bin/suid-id", 0o4755)
    os.mknod(root / "dev-zero", stat.S_IFCHR | 0o666, os.makedev(1, 5))
    return build_sd_image(tmp_path / "pi.img", root_dir=root)


def as_nobody(*args: str) -> subprocess.CompletedProcess:
    """Run ``args`` as user nobody. The program is started by a shell already running as
    nobody: setpriv itself finds its program in ways a local user's shell cannot."""
    setpriv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]
    return subprocess.run(
        [*setpriv, "sh", "-c", 'exec "$0" "$@"', *args],
        capture_output=True,
        text=True,
    )


def test_a_local_user_runs_no_setuid_program_and_reads_no_device_node_of_a_root(
    live_server, reachable_dir, image_with_setuid_and_device
):
    server = live_server(root=str(reachable_dir / "data"))
    api = server.session()
    with open(image_with_setuid_and_device, "rb") as image:
        assert api.put(f"{server.url}/api/v1/bakeforms/pios", data=image).status_code == 201
    root = server.root / "bakeforms/pios/root"
    assert (root / "usr/bin/suid-id").stat().st_mode & stat.S_ISUID  # kept, as a Pi needs
    assert stat.S_ISCHR((root / "dev-zero").stat().st_mode)

    ran = as_nobody(str(root / "usr/bin/suid-id"), "-u")
    read = as_nobody("head", "-c", "4", str(root / "dev-zero"))

    assert (ran.returncode, ran.stdout) != (0, "0\n"), "a local user got euid 0"
    assert "Permission denied" in ran.stderr
    assert read.returncode != 0 and "Permission denied" in read.stderr


def test_what_the_service_makes_is_private_and_a_pis_root_keeps_its_modes(
    live_server, sd_image_file, db_url
):
    server = live_server()
    api = server.session()
    url = f"{server.url}/api/v1"
    upload_raspios(server, sd_image_file)
    api.post(f"{url}/pis", json={"serial": "0000beef", "ip": "127.0.0.1"})
    disk = api.post(f"{url}/disks", json={"size_mib": 4}).json()
    bake = api.post(f"{url}/bakes", json={"bakeform": "raspios", "disk_ids": [disk["id"]]}).json()

    data = server.root
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    private = [data / "admin-token", *data.glob("disks/*/disk.img"), *data.glob("bakes/*")]
    if db_url.startswith("sqlite:///"):
        database = Path(db_url.removeprefix("sqlite:///"))
        private += [database, *database.parent.glob(f"{database.name}-*")]  # WAL, shm
    group_or_other = {str(p.relative_to(p.parents[1])): p.stat().st_mode & 0o077 for p in private}
    assert len(private) >= 3 and set(group_or_other.values()) == {0}, group_or_other
    root = data / "bakes" / bake["id"] / "root"
    modes = {path: stat.S_IMODE((root / path).stat().st_mode) for path in ("", "etc", "tmp")}
    assert modes == {"": 0o755, "etc": 0o755, "tmp": 0o1777}
    assert stat.S_IMODE((root / "etc/hostname").stat().st_mode) == 0o644
    assert stat.S_IMODE((root / "usr/bin/sudo").stat().st_mode) == 0o4755


@pytest.mark.parametrize(
    ("mode", "owner", "said"),
    [(0o755, 0, "is mode 0755"), (0o711, 0, "chmod 700"), (0o700, NOBODY, "belongs to uid")],
    ids=["world-readable", "world-enterable", "another-users"],
)
def test_a_data_dir_another_user_could_use_stops_the_start_with_one_line(
    tmp_path, mode, owner, said
):
    data = tmp_path / "data"
    data.mkdir(mode=mode)
    data.chmod(mode)
    os.chown(data, owner, owner)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAKERY_")}

    started = subprocess.run(
        [str(Path(sys.executable).with_name("bakery")), "serve", "--root", str(data)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert started.returncode == 1
    (line,) = started.stderr.strip().splitlines()
    assert line.startswith("Error: data dir") and said in line
    assert not any(data.iterdir()), "nothing was made in a data dir Bakery refused"


@pytest.mark.tools("mount", "umount")
@pytest.mark.parametrize(
    ("options", "missing"),
    [
        ("nosuid,nodev", None),
        ("nodev", "nosuid"),
        ("nosuid", "nodev"),
        ("defaults", "nosuid,nodev"),
    ],
)
def test_a_data_dir_mount_without_nosuid_and_nodev_is_warned_about(tmp_path, options, missing):
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(tmp_path)], check=True)
    try:
        warning = mount_warning(tmp_path)
    finally:
        subprocess.run(["umount", str(tmp_path)], check=True)

    if missing is None:
        assert warning is None
    else:
        assert warning is not None and f"without {missing}:" in warning
