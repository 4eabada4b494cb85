"""What every fleet module works with: one data directory's settings, the power controller
that records on the Pis' timelines, where bakeforms and bakes live, the cross-process locks
and the memory of what was said lately about requests anyone on the Pi LAN can send."""

from __future__ import annotations

import time
from collections.abc import Hashable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

from .. import fsutil, identifiers
from ..config import Settings
from ..power import PowerController
from . import events

#: Seconds between two timeline events or log lines about the same refused request.
QUIET_REPEATS = 60.0


@dataclass
class FleetContext:
    """One per process and data directory; the fleet modules take it as their first
    argument, as Ironic's conductor modules take a task."""

    settings: Settings
    power: PowerController
    _said: dict[Hashable, float] = field(default_factory=dict)

    @classmethod
    def create(cls, settings: Settings, power: PowerController | None = None) -> FleetContext:
        return cls(settings, power or PowerController(settings, record=events.record_power))

    def bakeform_dir(self, name: str) -> Path:
        return self.settings.path("bakeforms", identifiers.name(name, "bakeform name"))

    def bake_dir(self, bake_id: str) -> Path:
        return self.settings.path("bakes", identifiers.object_id(bake_id, "bake id"))

    def bake_root(self, bake_id: str) -> Path:
        return self.bake_dir(bake_id) / "root"

    def bake_boot(self, bake_id: str) -> Path:
        """The boot files a bake's Pi is served: its own links to its bakeform's."""
        return self.bake_dir(bake_id) / "boot"

    def lock(self, name: str, *, shared: bool = False) -> AbstractContextManager[None]:
        """A lock shared by every process of this host (gunicorn workers, the TFTP
        server): many ``shared`` holders at once, or one exclusive."""
        return fsutil.locked(self._lock_file(name), shared=shared)

    def forget_lock(self, name: str) -> None:
        """Remove the lock file of something that is gone for good (an unbaked bake), by
        its holder: a waiter that gets it finds the thing gone, as a newcomer would."""
        self._lock_file(name).unlink(missing_ok=True)

    def _lock_file(self, name: str) -> Path:
        return self.settings.path("locks", f"{name}.lock")

    def first_in_a_while(self, what: Hashable) -> bool:
        """True at most once per ``QUIET_REPEATS`` seconds for ``what``: requests anyone
        on the Pi LAN can send must not flood the timeline or the log."""
        now = time.monotonic()
        if now - self._said.get(what, float("-inf")) < QUIET_REPEATS:
            return False
        self._said[what] = now
        return True
