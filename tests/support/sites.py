"""What the tests that boot one simulated Pi share: the site, and a stemcell's image."""

from __future__ import annotations

import tarfile
from pathlib import Path

from bakery.sim.runner import SimulatedSite, SiteOptions


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
