"""Helpers for power tests: targets for the test PPIs in ``ppis/``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bakery.power import PowerTarget
from bakery.sim.wait import wait_until  # noqa: F401  (the tests' one deadline poll)

PPIS = Path(__file__).parent / "ppis"
SERIAL = "1a2b3c4d"


def ppi_target(script: str, serial: str = SERIAL, **settings: Any) -> PowerTarget:
    """A Pi powered by the program ``script`` of the tests' ``ppi_dir`` (``ppis/``)."""
    return PowerTarget(
        serial=serial, mac="dc:a6:32:01:02:03", model="4B", settings={"program": script, **settings}
    )


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
