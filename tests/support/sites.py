"""What the tests that boot one simulated Pi share: the site, a stemcell for the real
bosh-agent and its image, and the host's loop devices (which a Pi must leave as found)."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

from bakery.sim.runner import SimulatedSite, SiteOptions
from bakery.stemcell import build_stemcell
from tests.support import bosh_tools, debian


def one_pi_site(tmp_path: Path) -> SimulatedSite:
    """A netns site with one Pi 4 and no bakeform (enter it with ``with``)."""
    options = SiteOptions(
        root=tmp_path / "data", workdir=tmp_path / "site", pis=1, models=["4B"], mode="netns",
        bakeform=None,
    )  # fmt: skip
    return SimulatedSite(options)


def no_progress(_sent: int) -> None:
    """Upload progress, which the tests do not show."""


def image_of_stemcell(tarball: Path, into: Path) -> Path:
    """The ``image`` of a stemcell tarball, as the director hands it to the CPI."""
    with tarfile.open(tarball, "r:gz") as tar:
        tar.extract("image", into, filter="data")
    return into / "image"


def agent_stemcell(work: Path) -> Path:
    """A stemcell tarball ``bakery stemcell build`` makes of the cached Debian root, with
    the real amd64 bosh-agent and monit 5.2.5 (callers skip when either is missing)."""
    assert bosh_tools.AGENT_AMD64 and bosh_tools.MONIT_SOURCE
    tarball = work / "stemcell.tgz"
    build_stemcell(
        debian.debian_image(work),
        bosh_tools.AGENT_AMD64,
        tarball,
        monit_source=bosh_tools.MONIT_SOURCE,
        name="bosh-bakery-debian",
        version="1",
    )
    return tarball


def host_loops() -> str:
    """The host's loop devices, as ``losetup --list`` shows them: a simulated Pi powered
    off must leave them as it found them (its anchors are backed by nodes outside any
    test's directory, so the whole list is compared)."""
    return subprocess.run(
        ["losetup", "--list", "--noheadings"], capture_output=True, text=True, check=True
    ).stdout
