"""Who the fleet is acting for: the API token behind the current request, if any.

The API sets it for each request (``acting_as``), as Flask keeps ``request``: a context
variable, so every fleet module reads the same answer without it being handed down
every call. What it decides:

- whose bakes, disks and snapshots a request sees and may change (``owner_scope``): an
  ``admin`` or ``viewer`` token all of them, a ``cpi`` or ``operator`` token its owner's;
- whose they become when made (``new_owner``), and which token each event names.

Nothing acting (netboot, recovery, the CLI's local commands) is Bakery itself: it sees all.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

#: Roles that see every owner's bakes and disks (an admin changes them too; a viewer reads).
SEES_ALL = ("admin", "viewer")


@dataclass(frozen=True)
class Actor:
    """The token a request came with."""

    token: str
    role: str
    owner: str


_current: ContextVar[Actor | None] = ContextVar("bakery_actor", default=None)


@contextmanager
def acting_as(actor: Actor | None) -> Iterator[None]:
    """Everything the fleet does inside is done for ``actor``."""
    reset = _current.set(actor)
    try:
        yield
    finally:
        _current.reset(reset)


def current_actor() -> Actor | None:
    return _current.get()


def owner_scope() -> str | None:
    """The owner whose bakes, disks and snapshots the current actor sees; None: all."""
    actor = _current.get()
    return None if actor is None or actor.role in SEES_ALL else actor.owner


def new_owner() -> str:
    """Who owns what the current actor makes ("" for Bakery itself)."""
    actor = _current.get()
    return actor.owner if actor else ""


def actor_name() -> str:
    actor = _current.get()
    return actor.token if actor else ""
