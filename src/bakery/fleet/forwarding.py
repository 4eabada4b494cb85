"""Which host does a piece of work, and having it done there.

Each fleet call that touches a host's data dir, NFS exports or power devices is listed
in ``WORK`` with the host (or hosts, best first) that can do it, read from its arguments:
the host of the Pi, of the bake, of the disk. The call runs here when that host is this
one (always on SQLite: one host), and otherwise goes to it as a job (``fleet.jobs``); the
caller gets the same answer either way, the owning host's errors included.

A bake that names no Pi may go to any host with a free Pi: this one first (no detour),
then the live ones with the most free Pis, the next one tried when one has none left.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import NoPiAvailable, NotFound
from ..models import Bake, Disk, Job, Pi, PiState, Snapshot, shared_database
from ..power import PowerResult
from . import bakes, copies, disks, jobs, pis, power
from .context import FleetContext
from .hosts import down_hosts, get_host, is_live
from .queries import count_by, get_disk, get_live_bake, get_pi, get_snapshot


@dataclass(frozen=True)
class Result:
    """How a call's return value travels back from the host that ran it."""

    encode: Callable[[Any], Any]
    decode: Callable[[Any], Any]


NOTHING = Result(lambda _: None, lambda _: None)
BAKE = Result(lambda bake: bake.id, Bake.get_by_id)
DISK = Result(lambda disk: disk.id, Disk.get_by_id)
PI = Result(lambda pi: pi.id, Pi.get_by_id)
SNAPSHOT = Result(lambda snapshot: snapshot.id, Snapshot.get_by_id)
POWER = Result(asdict, lambda answer: PowerResult(**answer))


@dataclass(frozen=True)
class Work:
    run: Callable[..., Any]
    #: The hosts that may do it, best first, from the call's arguments (context first).
    hosts: Callable[..., list[str]]
    result: Result = NOTHING


def call(ctx: FleetContext, run: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``run(ctx, *args, **kwargs)`` on the host that owns what it touches."""
    if not shared_database():
        return run(ctx, *args, **kwargs)
    work = WORK[run.__name__]
    arguments = _keywords(run, ctx, *args, **kwargs)
    hosts = work.hosts(ctx, **arguments)
    for host in hosts[:-1]:
        try:
            return _call_on(ctx, host, work, arguments, elsewhere=True)
        except (NoPiAvailable, jobs.NotTaken):  # nothing done there: the next may do it
            continue
    return _call_on(ctx, hosts[-1], work, arguments, elsewhere=False)


def _keywords(run: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """A call's arguments (the context left out) as keywords, as a job carries them."""
    signature = inspect.signature(run)
    bound = signature.bind(*args, **kwargs).arguments
    keywords: dict[str, Any] = {}
    for name, value in list(bound.items())[1:]:
        if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
            keywords.update(value)
        else:
            keywords[name] = value
    return keywords


def _call_on(
    ctx: FleetContext, host: str, work: Work, arguments: dict[str, Any], *, elsewhere: bool
) -> Any:
    """``work`` on ``host``; ``elsewhere``: a next host may do it if this one cannot."""
    if host == ctx.settings.host_id:
        return work.run(ctx, **arguments)
    if not is_live(get_host(host)):
        raise jobs.NotTaken(f"host {host!r} is down: what it holds waits for it to return")
    answer = jobs.ask(host, work.run.__name__, arguments, elsewhere=elsewhere)
    return work.result.decode(answer)


def do_job(ctx: FleetContext, job: Job) -> None:
    """A job this host's runner took: the call, its result encoded for the asker."""
    work = WORK[job.kind]
    jobs.run(job, lambda arguments: work.result.encode(work.run(ctx, **arguments)))


# -- whose work it is -----------------------------------------------------------------------


def _own(ctx: FleetContext, host: str | None) -> list[str]:
    """A row's host; rows from before hosts (None) are this host's."""
    return [host or ctx.settings.host_id]


def _bake_hosts(
    ctx: FleetContext,
    bakeform_name: str,
    serial: str | None = None,
    disk_ids: tuple[str, ...] | list[str] = (),
    near_disks: tuple[str, ...] | list[str] = (),
    **_: Any,
) -> list[str]:
    if serial:
        return _own(ctx, get_pi(serial).host)
    if disk_ids:  # the disks are attached where they are
        return _own(ctx, get_disk(disk_ids[0]).host)
    ranked = hosts_with_free_pis(ctx)
    wanted = [host for host in _hosts_of_disks(ctx, near_disks) if host in ranked]
    return [*wanted, *(host for host in ranked if host not in wanted)]


def _hosts_of_disks(ctx: FleetContext, disk_ids: tuple[str, ...] | list[str]) -> list[str]:
    """The hosts holding these disks (those that exist), in order: a VM that will be given
    a persistent disk is best made where the disk is."""
    found = Disk.select(Disk.id, Disk.host).where(Disk.id.in_(list(disk_ids)))
    hosts = {disk.id: disk.host or ctx.settings.host_id for disk in found}
    return list(dict.fromkeys(hosts[d] for d in disk_ids if d in hosts))


def hosts_with_free_pis(ctx: FleetContext) -> list[str]:
    """This host if it has a free Pi (or one nobody owns yet), then the live hosts with
    the most available Pis; this host alone when none has any (its claim says so)."""
    me = ctx.settings.host_id
    free = count_by(Pi, Pi.host, Pi.state == PiState.AVAILABLE.value)
    down = down_hosts()
    others = [host for host in free if host and host != me and host not in down]
    ranked = sorted(others, key=lambda host: (-free[host], host))
    mine = [me] if free.get(me) or None in free else []
    return [*mine, *ranked] or [me]


def _bake_host(ctx: FleetContext, bake_id: str, **_: Any) -> list[str]:
    return [get_live_bake(bake_id).host_id]


def _pi_host(ctx: FleetContext, serial: str, **_: Any) -> list[str]:
    return _own(ctx, get_pi(serial).host)


def _disk_host(ctx: FleetContext, disk_id: str, **_: Any) -> list[str]:
    return _own(ctx, get_disk(disk_id).host)


def _new_disk_host(
    ctx: FleetContext, size_mib: int, bake_id: str | None = None, near: str | None = None, **_: Any
) -> list[str]:
    """A disk is made on its bake's host, or beside the bake it is meant for (BOSH's
    placement hint, worth nothing once that bake is gone), or here."""
    if bake_id:
        return _bake_host(ctx, bake_id)
    if near:
        with contextlib.suppress(NotFound):
            return _bake_host(ctx, near)
    return [ctx.settings.host_id]


def _here(ctx: FleetContext, **_: Any) -> list[str]:
    """Work only ever sent to a host as a job, about itself."""
    return [ctx.settings.host_id]


def _snapshot_host(ctx: FleetContext, snapshot_id: str, **_: Any) -> list[str]:
    return _own(ctx, get_snapshot(snapshot_id).host)


WORK: dict[str, Work] = {
    work.run.__name__: work
    for work in (
        Work(bakes.bake, _bake_hosts, BAKE),
        Work(bakes.unbake, _bake_host, BAKE),
        Work(bakes.power_bake, _bake_host, POWER),
        Work(bakes.set_agent_settings, _bake_host, BAKE),
        Work(power.operator_power, _pi_host, POWER),
        Work(pis.update_pi, _pi_host, PI),  # its address moves its exports
        Work(disks.create_disk, _new_disk_host, DISK),
        Work(disks.delete_disk, _disk_host),
        Work(disks.attach_disk, _disk_host, DISK),
        Work(disks.detach_disk, _disk_host, DISK),
        Work(disks.resize_disk, _disk_host, DISK),
        Work(disks.snapshot_disk, _disk_host, SNAPSHOT),
        Work(disks.delete_snapshot, _snapshot_host),
        Work(copies.copy_bakeform, _here),
        Work(copies.drop_copy, _here),
    )
}
