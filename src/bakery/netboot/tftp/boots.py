"""What the TFTP server remembers of each Pi between its requests: when its boot began,
the files it asked for (they tell its model), the boot target it was last given (reused
for a moment: a boot asks for 20-40 files), and when it was last turned away."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from .. import bootfiles
from ..bootfiles import BootTarget

#: Seconds a Pi's boot target is reused for its next requests (a boot asks for ~20-40).
TARGET_TTL = 2.0
#: Seconds without requests after which a Pi's next request starts a new boot.
QUIET_PERIOD = 30.0
#: Seconds between two power-offs of the same Pi booting without a bake.
TURN_AWAY_INTERVAL = 30.0
#: Pis whose boot bookkeeping is kept (oldest forgotten first).
MAX_TRACKED_PIS = 4096
#: File names kept per Pi to tell its model.
REQUESTS_KEPT = 16


@dataclass
class PiBoot:
    """One Pi's boot as this server has seen it."""

    last_request: float = 0.0
    requested: list[str] = field(default_factory=list)
    target: BootTarget | None = None
    target_ip: str = ""
    target_expires: float = 0.0
    turned_away: float = float("-inf")

    def note(self, name: str, now: float) -> bool:
        """A request for ``name``; True when it is the first of a new boot."""
        first = now - self.last_request > QUIET_PERIOD
        self.last_request = now
        if first:
            self.requested.clear()
        self.requested.append(name)
        del self.requested[:-REQUESTS_KEPT]
        return first

    def target_is_fresh(self, ip: str, now: float) -> bool:
        """The target last given still holds: same address, within ``TARGET_TTL``."""
        return self.target_ip == ip and now < self.target_expires

    def remember(self, target: BootTarget | None, ip: str, now: float) -> None:
        self.target, self.target_ip, self.target_expires = target, ip, now + TARGET_TTL

    def model(self) -> str | None:
        """The board family the files asked for point to."""
        return bootfiles.guess_model(self.requested)

    def time_to_turn_away(self, now: float) -> bool:
        """True at most once per ``TURN_AWAY_INTERVAL``: a Pi served nothing keeps
        asking, and its power must not be switched off at every request."""
        if now - self.turned_away < TURN_AWAY_INTERVAL:
            return False
        self.turned_away = now
        return True


class PiBoots:
    """The boots of the newest ``MAX_TRACKED_PIS`` Pis, by serial: a host on the Pi LAN
    sending made-up serials cannot grow this without end."""

    def __init__(self) -> None:
        self._boots: OrderedDict[str, PiBoot] = OrderedDict()

    def __getitem__(self, serial: str) -> PiBoot:
        boot = self._boots.get(serial)
        if boot is None:
            boot = self._boots[serial] = PiBoot()
            if len(self._boots) > MAX_TRACKED_PIS:
                self._boots.popitem(last=False)
        self._boots.move_to_end(serial)
        return boot

    def __contains__(self, serial: object) -> bool:
        return serial in self._boots

    def __len__(self) -> int:
        return len(self._boots)
