"""Two network namespaces joined by a veth pair: a private Ethernet segment for tests.

DHCP is broadcast on port 67/68, so testing a DHCP server on the host's own
interfaces would reach (and be reached by) whatever else lives there. A pair of
fresh namespaces gives each test a wire of its own: a server on one end, a client
on the other, nothing else on the segment.

Code runs inside a namespace in two ways: a command through ``ip netns exec``
(``Namespace.run``), or a Python callable through ``Namespace.call``, which runs it
in a fresh thread that entered the namespace with ``setns(2)``. A network namespace
is a per-thread attribute inherited by threads and processes that thread starts, and
a socket stays in the namespace it was created in: a socket made by ``call`` can be
used from the test's own thread, and a server started by ``call`` runs inside.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from bakery.sim.network import (
    VethEnd,
    add_namespace,
    add_veth,
    call_in_thread,
    delete_namespace,
    enter_namespace,
)

T = TypeVar("T")

COMMAND_TIMEOUT = 30.0


def missing_tools() -> list[str]:
    """What this machine lacks to build namespaces (for pytest skip messages)."""
    return [tool for tool in ("ip",) if shutil.which(tool) is None]


@dataclass(frozen=True)
class End:
    """One end of the veth pair: its interface name, optional ``addr/prefix`` and MAC."""

    interface: str
    address: str | None = None
    mac: str | None = None


@dataclass(frozen=True)
class Namespace:
    """A named network namespace (``ip netns``) holding one end of the pair."""

    name: str
    interface: str

    def run(
        self, argv: list[str], timeout: float = COMMAND_TIMEOUT, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace and wait for it."""
        return subprocess.run(
            ["ip", "netns", "exec", self.name, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
        )

    def call(self, func: Callable[..., T], *args: Any) -> T:
        """``func(*args)`` run in a thread that entered this namespace; its result or error."""
        return call_in_thread(lambda: enter_namespace(self.name), func, *args)

    def pids(self) -> list[int]:
        """Processes living in the namespace (all started by the test that made it)."""
        listed = subprocess.run(
            ["ip", "netns", "pids", self.name], capture_output=True, text=True, check=False
        )
        return [int(pid) for pid in listed.stdout.split()]


@contextmanager
def joined_namespaces(left: End, right: End) -> Iterator[tuple[Namespace, Namespace]]:
    """Two new namespaces whose only link is a veth pair between ``left`` and ``right``.

    Both ends and both loopbacks are up. On exit every process still inside either
    namespace is killed and the namespaces are deleted (which deletes the pair),
    whatever happened in the body."""
    suffix = uuid.uuid4().hex[:8]
    with ExitStack() as cleanup:
        namespaces = []
        for end, side in ((left, "a"), (right, "b")):
            namespace = Namespace(f"bakery-{side}-{suffix}", end.interface)
            add_namespace(namespace.name)
            cleanup.callback(delete_namespace, namespace.name)
            namespaces.append(namespace)
        add_veth(
            *(
                VethEnd(end.interface, namespace.name, address=end.address, mac=end.mac)
                for end, namespace in zip((left, right), namespaces, strict=True)
            )
        )
        yield namespaces[0], namespaces[1]
