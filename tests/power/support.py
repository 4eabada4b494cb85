"""Helpers for power tests: targets for the test PPIs in ``ppis/``, a deadline poll."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bakery.power import PowerTarget

PPIS = Path(__file__).parent / "ppis"
SERIAL = "1a2b3c4d"


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass; answer the last value."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def ppi_target(script: str, serial: str = SERIAL, **settings: Any) -> PowerTarget:
    """A Pi powered by ``ppis/<script>``, run by this interpreter (no shebang needed)."""
    return PowerTarget(
        serial=serial,
        mac="dc:a6:32:01:02:03",
        model="4B",
        settings={"path": sys.executable, "args": [str(PPIS / script)], **settings},
    )


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
