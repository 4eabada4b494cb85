"""packages/dnsmasq and packages/mtools compile, offline and as the agent compiles them,
from the Debian "orig" tarballs scripts/fetch-blobs pins, into programs that do Bakery's
work: dnsmasq 2.90 accepts the configuration Bakery renders, mtools reads a Pi boot
partition, and a bakeform imports with the package's mtools as the only mtools on PATH
(as the bakery job's bpm PATH arranges on a stemcell, which has none)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bakery.images import read_layout
from bakery.sim.image import default_boot_files

from .bosh import BARE_PATH, FETCH_BLOBS, compile_package, fetched_blobs, needs_ruby, run_packaged

BUILD_TOOLS = ("unshare", "gcc", "make", "tar", "xz", "bzip2")
pytestmark = [
    pytest.mark.slow,
    needs_ruby,
    pytest.mark.root,
    pytest.mark.tools(*BUILD_TOOLS),
]
#: The pinned sources: ``NAME_ORIG=<path under pool/main>`` and ``NAME_SHA256=<digest>``.
PINS = dict(re.findall(r"^([A-Z]+_(?:ORIG|SHA256))=(\S+)$", FETCH_BLOBS.read_text(), re.M))
#: What mtools needs to read an image file, whatever the stemcell or the machine has.
MTOOLS_ENV = {"MTOOLS_SKIP_CHECK": "1", "LC_ALL": "C"}
#: What a bakeform import runs besides mtools (eatmydata is optional and left out).
IMPORT_TOOLS = ("debugfs", "fallocate", "prlimit")


@pytest.fixture(scope="module")
def sources(request, tmp_path_factory) -> Path:
    """The dnsmasq and mtools blobs, fetched once and cached until a pin changes."""
    pins = "\n".join(f"{key}={value}" for key, value in sorted(PINS.items()))
    digest = hashlib.sha256(pins.encode()).hexdigest()[:12]
    return fetched_blobs(
        request, tmp_path_factory, f"bakery-sources-{digest}", ["dnsmasq", "mtools"]
    )


@pytest.fixture(scope="module")
def dnsmasq(sources, tmp_path_factory) -> Path:
    return compile_package("dnsmasq", sources, tmp_path_factory.mktemp("bosh"))


@pytest.fixture(scope="module")
def mtools(sources, tmp_path_factory) -> Path:
    return compile_package("mtools", sources, tmp_path_factory.mktemp("bosh"))


@dataclass(frozen=True)
class Mirror:
    """A Debian mirror on loopback: ``url`` for DEBIAN_MIRROR, files put in its pool."""

    url: str
    pool: Path

    def serve(self, pool_path: str, content: bytes) -> None:
        (self.pool / pool_path).parent.mkdir(parents=True, exist_ok=True)
        (self.pool / pool_path).write_bytes(content)

    def fetch(self, dest: Path, part: str) -> subprocess.CompletedProcess:
        """``scripts/fetch-blobs --dest DEST PART`` taking Debian sources from here."""
        return subprocess.run(
            [str(FETCH_BLOBS), "--dest", str(dest), part],
            env={"PATH": BARE_PATH, "DEBIAN_MIRROR": self.url},
            capture_output=True,
            text=True,
            timeout=60,
        )


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Requests are the test's business, not its output."""


@pytest.fixture
def mirror(tmp_path) -> Iterator[Mirror]:
    root = tmp_path / "mirror"
    pool = root / "debian" / "pool" / "main"
    pool.mkdir(parents=True)
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield Mirror(f"http://127.0.0.1:{server.server_port}/debian", pool)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_fetch_blobs_takes_the_sources_from_any_mirror_serving_the_pinned_bytes(
    sources, mirror, tmp_path
):
    genuine = sources / "mtools" / Path(PINS["MTOOLS_ORIG"]).name
    mirror.serve(PINS["MTOOLS_ORIG"], genuine.read_bytes())
    result = mirror.fetch(tmp_path / "blobs", "mtools")
    assert result.returncode == 0, result.stderr
    fetched = tmp_path / "blobs" / "mtools" / genuine.name
    assert fetched.read_bytes() == genuine.read_bytes()


def test_fetch_blobs_refuses_a_source_whose_sha256_is_not_the_pinned_one(mirror, tmp_path):
    mirror.serve(PINS["DNSMASQ_ORIG"], b"not dnsmasq, whatever the name says\n")
    result = mirror.fetch(tmp_path / "blobs", "dnsmasq")
    assert result.returncode != 0
    assert PINS["DNSMASQ_SHA256"] in result.stderr
    assert not list((tmp_path / "blobs" / "dnsmasq").iterdir())


def offline(source: Path, dest: Path, *parts: str, env: dict | None = None):
    """``scripts/fetch-blobs --offline SOURCE``, recording into ``dest`` (or with bosh)."""
    where = ["--dest", str(dest)] if dest else []
    return subprocess.run(
        [str(FETCH_BLOBS), *where, "--offline", str(source), *parts],
        env={"PATH": BARE_PATH, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_fetch_blobs_offline_takes_a_downloaded_source_only_with_its_pinned_sha256(
    sources, tmp_path
):
    genuine = sources / "dnsmasq" / Path(PINS["DNSMASQ_ORIG"]).name
    downloaded = tmp_path / "downloads"
    downloaded.mkdir()
    shutil.copy(genuine, downloaded / genuine.name)
    assert offline(downloaded, tmp_path / "good", "dnsmasq").returncode == 0
    assert (tmp_path / "good" / "dnsmasq" / genuine.name).read_bytes() == genuine.read_bytes()

    (downloaded / genuine.name).write_bytes(genuine.read_bytes() + b"tampered")
    refused = offline(downloaded, tmp_path / "bad", "dnsmasq")

    assert refused.returncode != 0
    assert PINS["DNSMASQ_SHA256"] in refused.stderr
    assert not list((tmp_path / "bad" / "dnsmasq").iterdir())


def test_fetch_blobs_says_in_one_line_that_recording_blobs_needs_the_bosh_cli(sources):
    result = offline(sources, None, "dnsmasq")

    assert result.returncode != 0
    assert result.stderr.count("\n") == 1
    assert "needs the bosh CLI" in result.stderr and "--dest" in result.stderr


def test_packaged_dnsmasq_is_version_2_90(dnsmasq):
    version = run_packaged(dnsmasq / "sbin" / "dnsmasq", "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("Dnsmasq version 2.90 ")


def test_packaged_dnsmasq_accepts_the_configuration_bakery_renders(dnsmasq, tmp_path):
    """Every optional directive rendered too (Pi 3B padding, reply delay)."""
    settings = tmp_path / "bakery.json"
    settings.write_text(
        json.dumps(
            {
                "root": str(tmp_path / "data"),
                "pi_interface": "eth0",
                "proxy_range": "10.0.0.0",
                "pi3b_padding": True,
                "dhcp_reply_delay": 1,
            }
        )
    )
    config = tmp_path / "dnsmasq.conf"
    subprocess.run(
        [sys.executable, "-m", "bakery.cli", "dnsmasq-config", "--config", str(settings),
         "--output", str(config)],
        env={"PATH": BARE_PATH},
        check=True,
        capture_output=True,
    )  # fmt: skip
    assert "pxe-service=tag:rpi" in config.read_text()
    check = run_packaged(dnsmasq / "sbin" / "dnsmasq", "--test", f"--conf-file={config}")
    assert check.returncode == 0, check.stderr
    assert "syntax check OK" in check.stderr


def test_packaged_dnsmasq_test_rejects_a_broken_configuration(dnsmasq, tmp_path):
    """So that the check above means something."""
    config = tmp_path / "dnsmasq.conf"
    config.write_text("dhcp-range=not-an-address,proxy\n")
    check = run_packaged(dnsmasq / "sbin" / "dnsmasq", "--test", f"--conf-file={config}")
    assert check.returncode != 0


def test_packaged_mtools_reads_a_pi_boot_partition(mtools, sd_image_file, tmp_path):
    image = f"{sd_image_file}@@{read_layout(sd_image_file).boot.offset}"
    listing = run_packaged(mtools / "bin" / "mdir", "-/", "-b", "-i", image, "::/", env=MTOOLS_ENV)
    assert listing.returncode == 0, listing.stderr
    assert "::/config.txt" in listing.stdout.splitlines()
    copied = run_packaged(
        mtools / "bin" / "mcopy", "-n", "-i", image, "::/config.txt", str(tmp_path),
        env=MTOOLS_ENV,
    )  # fmt: skip
    assert copied.returncode == 0, copied.stderr
    assert (tmp_path / "config.txt").read_bytes() == default_boot_files()["config.txt"]
    usage = run_packaged(mtools / "bin" / "mdu", "-s", "-i", image, "::/", env=MTOOLS_ENV)
    assert usage.returncode == 0 and usage.stdout.split()[0] == "::/", usage.stderr


def test_bakeform_import_works_with_only_the_packaged_mtools(mtools, sd_image_file, tmp_path):
    """On a stemcell the package's bin/ is the only mtools on the bakery process's PATH."""
    tools = tmp_path / "tools"
    tools.mkdir()
    for tool in IMPORT_TOOLS:
        (tools / tool).symlink_to(shutil.which(tool))
    path = f"{mtools / 'bin'}:{tools}"
    assert shutil.which("mcopy", path=path) == str(mtools / "bin" / "mcopy")
    staging = tmp_path / "staging"
    (staging / "root").mkdir(parents=True)
    script = (
        "import sys; from pathlib import Path; from bakery.images import import_image\n"
        "with open(sys.argv[1], 'rb') as image: import_image(image, Path(sys.argv[2]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(sd_image_file), str(staging)],
        env={"PATH": path},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    for name, content in default_boot_files().items():
        assert (staging / "boot" / name).read_bytes() == content, name


def test_fetch_blobs_offline_names_a_source_missing_from_the_directory(tmp_path):
    (tmp_path / "empty").mkdir()

    result = offline(tmp_path / "empty", tmp_path / "blobs", "dnsmasq")

    assert result.returncode != 0
    assert f"--offline: no {Path(PINS['DNSMASQ_ORIG']).name} in" in result.stderr
