"""The Bakery hosts that share one database: each registers under its ``host_id`` when it
starts and keeps a heartbeat; a second live process under the same name is refused, so
two hosts can never both believe a bake is theirs to recover (a restart of one would roll
back the other's live bakes). Each Pi belongs to one host: the one that registered it or
first saw it boot, or the one an operator moves it to.

A host is live while its heartbeat is younger than ``LIVE_SECONDS``. A crash leaves a
fresh heartbeat behind: the next start on the same machine sees that the process it names
is gone and takes over at once; a start elsewhere waits until the heartbeat is stale.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import peewee as pw

from ..errors import Conflict, NotFound
from ..models import Host, Pi, shared_database, utcnow, write_transaction
from .context import FleetContext
from .queries import count_by

#: Seconds between two heartbeats, and the age at which a heartbeat means a dead host.
HEARTBEAT_SECONDS = 10.0
LIVE_SECONDS = 30.0


@dataclass(frozen=True)
class HostStatus:
    """A host as ``bakery host list`` shows it."""

    name: str
    live: bool
    machine: str
    started_at: datetime
    heartbeat_at: datetime
    data_dir: str
    data_bytes: int
    data_free_bytes: int
    pis: int


def is_live(host: Host, now: datetime | None = None) -> bool:
    age = (now or utcnow()) - host.heartbeat_at
    return not host.stopped and age < timedelta(seconds=LIVE_SECONDS)


def join(ctx: FleetContext) -> str:
    """Register this process as host ``host_id``; return its instance id (what its
    heartbeat and its leaving name). Conflict if another live process holds the name."""
    name = ctx.settings.host_id
    me = _this_process(ctx)
    try:
        with write_transaction():
            row = Host.get_or_none(Host.name == name)
            if row is None:
                Host.create(name=name, **me)
            elif is_live(row) and not _dead_predecessor(row):
                raise _taken(row)
            else:
                Host.update(**me, stopped=False).where(Host.id == row.id).execute()
    except pw.IntegrityError:  # another process created the row meanwhile
        raise Conflict(f"another Bakery is starting as host {name!r}", code="host_taken") from None
    return str(me["instance"])


def heartbeat(ctx: FleetContext, instance: str) -> bool:
    """Say this host is alive (and how full its data dir is); False if another process
    has taken the name meanwhile (this one was thought dead): it must stop serving."""
    usage = _disk_usage(ctx.settings.root)
    updated = Host.update(heartbeat_at=utcnow(), **usage).where(
        Host.name == ctx.settings.host_id, Host.instance == instance
    )
    return bool(updated.execute())


def leave(ctx: FleetContext, instance: str) -> None:
    """A clean stop: the name is free at once."""
    Host.update(stopped=True).where(
        Host.name == ctx.settings.host_id, Host.instance == instance
    ).execute()


def list_hosts() -> list[HostStatus]:
    """Every host that ever joined, with its liveness and how many Pis it has."""
    counts = count_by(Pi, Pi.host)
    now = utcnow()
    return [
        HostStatus(
            name=host.name,
            live=is_live(host, now),
            machine=host.machine,
            started_at=host.started_at,
            heartbeat_at=host.heartbeat_at,
            data_dir=host.data_dir,
            data_bytes=host.data_bytes,
            data_free_bytes=host.data_free_bytes,
            pis=counts.get(host.name, 0),
        )
        for host in Host.select().order_by(Host.name)
    ]


def down_hosts() -> set[str]:
    """The hosts that have joined and stopped beating: their Pis are not being served."""
    now = utcnow()
    return {host.name for host in Host.select() if not is_live(host, now)}


def get_host(name: str) -> Host:
    host = Host.get_or_none(Host.name == name)
    if host is None:
        raise NotFound(f"no Bakery host named {name!r}", code="host_not_found")
    return host


def adopt(ctx: FleetContext, pi: Pi) -> bool:
    """Make ``pi`` this host's if it is no host's yet (this host saw it first); whether
    it is this host's now."""
    me = ctx.settings.host_id
    if pi.host is None:
        Pi.update(host=me).where(Pi.id == pi.id, Pi.host.is_null()).execute()
        pi.host = Pi.get_by_id(pi.id).host
    return bool(pi.host == me)


def check_ours(ctx: FleetContext, pi: Pi, doing: str) -> None:
    """Conflict unless ``pi`` is this host's (or nobody's, and now becomes this host's):
    its root, exports and boot files would be made where its TFTP and NFS never look."""
    if not adopt(ctx, pi):
        raise Conflict(
            f"Pi {pi.serial} belongs to host {pi.host!r}: {doing} it through that host's API",
            code="pi_on_other_host",
        )


def export_on(ctx: FleetContext, host: str | None, path: Path) -> str:
    """The NFS export of ``path`` (in this host's data dir) as its Pi mounts it from
    ``host``'s NFS server and data dir (this host's for None)."""
    here = f"{ctx.settings.nfs_server}:{path}"
    if host in (None, ctx.settings.host_id) or not shared_database():  # SQLite: one host
        return here
    row = Host.get_or_none(Host.name == host)
    if row is None:
        return here
    return f"{row.nfs_server}:{Path(row.data_dir) / path.relative_to(ctx.settings.root)}"


def host_token(ctx: FleetContext) -> str:
    """The token this host shows other hosts' APIs (made at start, ``auth.ensure_host_token``)."""
    return ctx.settings.host_token_file.read_text().strip()


def _this_process(ctx: FleetContext) -> dict[str, object]:
    now = utcnow()
    return {
        "instance": uuid.uuid4().hex,
        "machine": os.uname().nodename,
        "pid": os.getpid(),
        "data_dir": str(ctx.settings.root),
        "url": ctx.settings.url_for_hosts,
        "nfs_server": ctx.settings.nfs_server,
        "started_at": now,
        "heartbeat_at": now,
        **_disk_usage(ctx.settings.root),
    }


def _disk_usage(root: Path) -> dict[str, int]:
    try:
        usage = shutil.disk_usage(root)
    except OSError:
        return {"data_bytes": 0, "data_free_bytes": 0}
    return {"data_bytes": usage.total, "data_free_bytes": usage.free}


def _dead_predecessor(row: Host) -> bool:
    """Whether ``row`` names a process of this machine that is gone (a crash, a kill -9:
    its heartbeat is fresh, but nobody will beat it again), or this very process."""
    if row.machine != os.uname().nodename:
        return False
    return row.pid == os.getpid() or not _running(row.pid)


def _running(pid: int) -> bool:
    """A live process (a zombie, killed but not yet reaped, is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _taken(row: Host) -> Conflict:
    age = (utcnow() - row.heartbeat_at).total_seconds()
    return Conflict(
        f"another Bakery serves as host {row.name!r} (on {row.machine}, pid {row.pid}, "
        f"heartbeat {age:.0f} s ago): give this one its own host_id",
        code="host_taken",
    )
