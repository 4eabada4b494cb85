"""The simulated fleet: power switches, and one boot thread per powered Pi.

Powering a Pi on starts its bootloader in a thread on the Pi's network; powering it
off stops that boot wherever it is (the thread notices within a fraction of a
second) and the Pi is ``off`` at once, as a relay cutting power would leave it. A
boot that ends late can never overwrite the state of a newer power-on: every state
change carries the power generation it belongs to. A root whose init can run here is
booted into its userspace (``userspace``), which a power-off kills.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .bootloader import DEFAULT_TIMEOUTS, BootCancelled, BootFailure, Bootloader, Timeouts
from .models import SimPi
from .network import Network
from .userspace import INIT, Userspace

log = logging.getLogger(__name__)


class UnknownPi(KeyError):
    """No simulated Pi has this serial."""


class Simulator:
    def __init__(
        self, pis: Iterable[SimPi], network: Network, timeouts: Timeouts = DEFAULT_TIMEOUTS
    ) -> None:
        self.pis = {pi.serial: pi for pi in pis}
        self.network = network
        self.timeouts = timeouts
        self._lock = threading.Lock()
        self._power_off: dict[str, threading.Event] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._userspaces: dict[str, Userspace] = {}

    def get(self, serial: str) -> SimPi:
        try:
            return self.pis[serial]
        except KeyError:
            raise UnknownPi(serial) from None

    def status(self, serial: str) -> dict[str, Any]:
        with self._lock:
            return self.get(serial).status()

    def statuses(self) -> list[dict[str, Any]]:
        with self._lock:
            return [pi.status() for pi in self.pis.values()]

    def timeline(self, serial: str) -> list[dict[str, Any]]:
        with self._lock:
            return [entry.as_dict() for entry in self.get(serial).timeline]

    def power_on(self, serial: str) -> dict[str, Any]:
        """Close the relay: start booting. A Pi already on stays as it is."""
        pi = self.get(serial)
        with self._lock:
            if pi.powered:
                return pi.status()
            pi.powered, pi.state, pi.reason, pi.hostname = True, "dhcp", "", ""
            pi.generation += 1
            pi.power_ons.append(time.time())
            pi.note("power", "on")
            power_off = self._power_off[serial] = threading.Event()
            thread = threading.Thread(
                target=self._boot,
                args=(pi, pi.generation, power_off),
                name=f"sim-pi-{serial}",
                daemon=True,
            )
            self._threads[serial] = thread
            thread.start()
            return pi.status()

    def power_off(self, serial: str) -> dict[str, Any]:
        """Open the relay: whatever the boot was doing stops, a running userspace with
        every process in it."""
        pi = self.get(serial)
        with self._lock:
            if serial in self._power_off:
                self._power_off.pop(serial).set()
            if pi.powered:
                pi.powered, pi.state, pi.reason, pi.hostname = False, "off", "", ""
                pi.generation += 1
                pi.note("power", "off")
            running = self._userspaces.pop(serial, None)
            status = pi.status()
        if running is not None:
            running.power_off()
        return status

    def userspace(self, serial: str) -> Userspace | None:
        """The running userspace of the Pi, if its root's init runs."""
        with self._lock:
            return self._userspaces.get(self.get(serial).serial)

    def booting(self, serial: str) -> bool:
        """Whether a boot thread of this Pi is still running (even one cut short by a
        power-off, until it notices)."""
        thread = self._threads.get(self.get(serial).serial)
        return thread is not None and thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        """Power every Pi off and wait for the boot threads to end."""
        for serial in self.pis:
            self.power_off(serial)
        for thread in list(self._threads.values()):
            thread.join(timeout)

    def _boot(self, pi: SimPi, generation: int, power_off: threading.Event) -> None:
        def report(state: str, step: str, detail: str) -> None:
            with self._lock:
                if pi.generation != generation:
                    return
                pi.state = state
                pi.note(step, detail)

        try:
            self.network.enter(pi)
            nfs_root = Bootloader(
                pi, self.network.link(pi), report, power_off, self.timeouts
            ).boot()
            if nfs_root is not None:
                self._start_userspace(pi, generation, *nfs_root)
        except BootCancelled:
            return
        except BootFailure as exc:
            self._fail(pi, generation, str(exc))
        except Exception as exc:  # a simulator bug must show as a failed Pi, not vanish
            log.exception("simulated Pi %s crashed", pi.serial)
            self._fail(pi, generation, f"simulator error: {type(exc).__name__}: {exc}")

    def _start_userspace(self, pi: SimPi, generation: int, server: str, root: str) -> None:
        """Run the root's init as the Pi's; a power-off that came meanwhile ends it."""
        namespace = self.network.namespace(pi)
        assert namespace is not None  # the bootloader returns a root only with one
        # A name of its own: a cgroup another boot left behind is never joined.
        name = f"{pi.serial}-{generation}-{uuid.uuid4().hex[:8]}"
        port = self.network.link(pi).nfs_port
        running = Userspace(Path(root), namespace, name, server, port)
        running.start()
        with self._lock:
            current = pi.generation == generation
            if current:
                self._userspaces[pi.serial] = running
                pi.note("userspace", f"init /{INIT} of {root} started as PID 1")
        if not current:
            running.power_off()

    def _fail(self, pi: SimPi, generation: int, reason: str) -> None:
        with self._lock:
            if pi.generation != generation:
                return
            pi.state, pi.reason = "failed", reason
            pi.note("failed", reason)
