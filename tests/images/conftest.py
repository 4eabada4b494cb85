"""Fixtures of the image tests: a Pi-like source tree, a real SD image of it (built once per
module), and an empty staging directory."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bakery.sim.image import (
    REQUIRED_TOOLS,
    build_sd_image,
    populate_root,
)


@pytest.fixture(scope="module")
def source_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return populate_root(tmp_path_factory.mktemp("source") / "root")


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory, source_root: Path) -> Path:
    if any(shutil.which(t) is None for t in REQUIRED_TOOLS):
        pytest.skip(f"needs {', '.join(REQUIRED_TOOLS)}")
    return build_sd_image(tmp_path_factory.mktemp("image") / "pi.img", root_dir=source_root)


@pytest.fixture
def staging(tmp_path: Path) -> Path:
    """What the caller prepares: a staging dir holding an empty ``root``."""
    (tmp_path / "staging" / "root").mkdir(parents=True)
    return tmp_path / "staging"
