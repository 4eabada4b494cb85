"""Jobs: how the host that takes a request has another host do it, through PostgreSQL.

A bake, an unbake, a disk or a power call touches one host's data dir, NFS exports or
power devices: the host that owns the Pi or the disk does it. When a request for it
reaches another host's API, that API writes a ``Job`` row for the owning host and waits;
the owning host's job runners (threads in each of its API workers) take pending jobs with
``SELECT ... FOR UPDATE SKIP LOCKED``, so two runners never take the same one, do the
work for the asker's token, and write the result or the error back. ``NOTIFY`` wakes
runners when a job is written and the waiter when it ends: no polling delay. A lost
notification (a dropped connection) costs at most ``RECHECK_SECONDS``.

The asker waits as long as the work is alive. A pending job waits ``QUEUE_SECONDS`` for a
runner of its host, whether the host is busy or down (then its runners take the job when
it starts again); when nobody took it by then, it is cancelled (``NotTaken``: nothing was
done, another host may be asked), so a host that returns later never does work nobody
waits for. Work another host could do as well (a bake that names no Pi) does not wait for
a host that is down: it is cancelled at once and goes to the next host. No new job is
written for a host that is down (``fleet.forwarding``). A running job holds a lease its
runner's process renews; when the lease runs out (the worker died, the host was killed),
the asker is answered ``host_down`` and the host's recovery undoes what the job left.
Every time is the database's clock, so hosts whose clocks differ agree. SQLite is one
host's database: there, nothing goes through jobs.
"""

from __future__ import annotations

import contextlib
import logging
import select
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any

import peewee as pw

from ..errors import BakeryError, Unavailable, error_class
from ..models import Job, database, utcnow
from .actors import Actor, acting_as, current_actor
from .context import FleetContext
from .hosts import get_host, is_live

log = logging.getLogger(__name__)

#: Seconds a pending job may wait for a runner of its host (busy, or down until it returns).
QUEUE_SECONDS = 300
#: Seconds a running job's lease lasts; its runner's process renews it every third of that.
LEASE_SECONDS = 30
#: Seconds between two looks at the database when no notification came.
RECHECK_SECONDS = 5.0
#: Hours an ended job is kept (to read what became of a request) before it is deleted.
KEEP_ENDED_HOURS = 24
NEW_JOB_CHANNEL = "bakery_job_new"
JOB_DONE_CHANNEL = "bakery_job_done"
ENDED = ("done", "failed", "cancelled")
#: The database's clock, in UTC as every stored time is.
NOW = pw.SQL("(now() at time zone 'utc')")


def _later(seconds: float) -> pw.SQL:
    """The database's time ``seconds`` from now (before now, when negative)."""
    return pw.SQL(f"(now() at time zone 'utc') + interval '{int(seconds)} seconds'")


class HostDown(Unavailable):
    """The host that owns the work is not doing it: down, or died doing it."""

    code = "host_down"


class NotTaken(HostDown):
    """The job was cancelled before any of it was done: another host may be asked."""


# -- the asking side ------------------------------------------------------------------------


def ask(host: str, kind: str, args: dict[str, Any], *, elsewhere: bool = False) -> Any:
    """Have ``host`` run ``kind`` with ``args`` for the current actor; its result (JSON) or
    its error, raised here as the owning host raised it (same class, code and message).
    ``elsewhere``: another host could do it too (a bake that names no Pi), so the job is
    not left waiting for ``host`` if it goes down."""
    hub = JobHub.shared()
    ended = _wait(hub, send(host, kind, args), elsewhere)
    if ended.state == "done":
        return ended.result
    if ended.state == "cancelled":
        raise NotTaken(
            f"host {host!r} did not take the {kind} within {QUEUE_SECONDS} s "
            "(it is down or too busy): nothing was done"
        )
    raise remote_error(ended.error or {})


def send(host: str, kind: str, args: dict[str, Any]) -> Job:
    """Write a job for ``host`` and wake its runners; not waited for."""
    actor = current_actor()
    with database.atomic():
        job = Job.create(
            host=host,
            kind=kind,
            args=args,
            actor=asdict(actor) if actor else None,
            start_by=_later(QUEUE_SECONDS),
        )
        _notify(NEW_JOB_CHANNEL, host)
    return job


def _wait(hub: JobHub, job: Job, elsewhere: bool) -> Job:
    with hub.expecting(job.id) as ended:
        while True:
            job = Job.get_by_id(job.id)
            if job.state in ENDED:
                return job
            if job.state == "pending" and _cancel_if_overdue(job, elsewhere):
                continue
            if _lease_lost(job):
                raise HostDown(
                    f"host {job.host!r} stopped during the {job.kind}; "
                    "its recovery undoes what it left when it starts again"
                )
            ended.wait(RECHECK_SECONDS)
            ended.clear()


def _cancel_if_overdue(job: Job, elsewhere: bool) -> bool:
    """Cancel a pending job that waited ``QUEUE_SECONDS``; until then it waits, its host
    down or not, unless another host could do it (``elsewhere``) and its host is down."""
    this = Job.id == job.id
    if elsewhere and not is_live(get_host(job.host)):
        return _cancel(this) > 0
    return _cancel(this, Job.start_by < NOW) > 0


def _lease_lost(job: Job) -> bool:
    """Whether ``job`` runs with a lease nobody renews any more."""
    if job.state != "running":
        return False
    lost = Job.select().where(Job.id == job.id, Job.state == "running", Job.lease_until < NOW)
    return bool(lost.exists())


def _cancel(*which: pw.Expression) -> int:
    """Cancel the pending jobs ``which`` selects (a running one finishes); their arguments
    (user-data, maybe) go with them. How many were cancelled."""
    cancelled = Job.update(state="cancelled", args={}, finished_at=utcnow())
    return int(cancelled.where(Job.state == "pending", *which).execute())


def forget_ended(ctx: FleetContext) -> int:
    """Cancel every host's jobs nobody took in time (their askers are gone), and delete
    this host's jobs that ended more than ``KEEP_ENDED_HOURS`` ago."""
    _cancel(Job.start_by < NOW)
    ended_before = _later(-KEEP_ENDED_HOURS * 3600)
    mine_ended = (Job.host == ctx.settings.host_id) & Job.state.in_(ENDED)
    return int(Job.delete().where(mine_ended, Job.finished_at < ended_before).execute())


def remote_error(error: dict[str, Any]) -> BakeryError:
    """The error a job ended with, as the owning host raised it: its class (so a caller
    can tell "no Pi free there" from any other failure), status, code and message."""
    code = str(error.get("code", "internal_error"))
    raised = error_class(code)(
        str(error.get("message", "the owning host failed")),
        code=code,
        details=error.get("details"),
    )
    raised.status = int(error.get("status", 500))
    return raised


# -- the owning side ------------------------------------------------------------------------


def take(ctx: FleetContext) -> Job | None:
    """The oldest pending job for this host, now ``running`` under a lease; None when
    there is none. Jobs whose asker has given up are cancelled on the way."""
    me = ctx.settings.host_id
    _cancel(Job.host == me, Job.start_by < NOW)
    with database.atomic():
        query = Job.select().where(Job.host == me, Job.state == "pending").order_by(Job.id)
        # peewee takes the locking clause as written; its stubs only know True
        locked = query.for_update("FOR UPDATE SKIP LOCKED")  # type: ignore[arg-type]
        job: Job | None = locked.limit(1).first()
        if job is None:
            return None
        running = dict(state="running", lease_until=_later(LEASE_SECONDS))
        Job.update(**running).where(Job.id == job.id).execute()
    return job


def run(job: Job, work: Callable[[dict[str, Any]], Any]) -> None:
    """Do ``job`` for its asker and write how it ended (its arguments are dropped then:
    they may hold a bake's user-data, which belongs in the root only). Whatever goes
    wrong, the job ends: an asker never waits on a job nobody runs."""
    ended = _outcome(job, work)
    try:
        _end(job, ended)
    except Exception:  # the result would not store (not JSON?): the asker is told so
        log.exception("job %d (%s): could not store its outcome", job.id, job.kind)
        message = f"the {job.kind} on host {job.host} ended, but its answer could not be stored"
        _end(job, {"state": "failed", "error": _error_of(500, "internal_error", message)})


def _outcome(job: Job, work: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    try:
        with acting_as(Actor(**job.actor) if job.actor else None):
            return {"state": "done", "result": work(job.args)}
    except BakeryError as exc:
        error = _error_of(exc.status, exc.code, exc.message)
        return {"state": "failed", "error": {**error, "details": exc.details}}
    except Exception as exc:
        log.exception("job %d (%s) failed", job.id, job.kind)
        message = f"the {job.kind} failed on host {job.host}: {type(exc).__name__}"
        return {"state": "failed", "error": _error_of(500, "internal_error", message)}


def _end(job: Job, ended: dict[str, Any]) -> None:
    with database.atomic():
        Job.update(**ended, args={}, finished_at=utcnow()).where(Job.id == job.id).execute()
        _notify(JOB_DONE_CHANNEL, str(job.id))


def _error_of(status: int, code: str, message: str) -> dict[str, Any]:
    return {"status": status, "code": code, "message": message}


def recover_jobs(ctx: FleetContext) -> int:
    """At start: jobs this host was running when it stopped failed (the bake recovery
    rolls back what they left); pending ones wait for the runners."""
    return int(
        Job.update(
            state="failed",
            args={},
            finished_at=utcnow(),
            error=_error_of(503, "host_down", f"host {ctx.settings.host_id} restarted"),
        )
        .where(Job.host == ctx.settings.host_id, Job.state == "running")
        .execute()
    )


class JobRunners:
    """``count`` threads of one process doing this host's jobs with ``work`` until
    ``stop()``, and one renewing the leases of the jobs they run."""

    def __init__(
        self, ctx: FleetContext, work: Callable[[FleetContext, Job], None], count: int
    ) -> None:
        self.ctx = ctx
        self.work = work
        self.count = count
        self._stopping = threading.Event()
        self._running: set[int] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        hub = JobHub.shared()
        for number in range(self.count):
            name = f"job-runner-{number}"
            threading.Thread(target=self._serve, args=(hub,), name=name, daemon=True).start()
        threading.Thread(target=self._renew_leases, name="job-leases", daemon=True).start()

    def stop(self) -> None:
        """No new job is taken; one running ends with the process (a graceful stop of a
        worker waits for it), and its lease, no longer renewed, tells its asker."""
        self._stopping.set()
        JobHub.shared().new_job.set()

    def _serve(self, hub: JobHub) -> None:
        while not self._stopping.is_set():
            try:
                with database.connection_context():
                    job = take(self.ctx)
                    if job is not None:
                        self._do(job)
                        continue
            except Exception:  # the database away for a while: try again
                log.exception("job runner")
            hub.new_job.wait(RECHECK_SECONDS)
            hub.new_job.clear()

    def _do(self, job: Job) -> None:
        with self._lock:
            self._running.add(job.id)
        try:
            self.work(self.ctx, job)
        finally:
            with self._lock:
                self._running.discard(job.id)

    def _renew_leases(self) -> None:
        while not self._stopping.wait(LEASE_SECONDS / 3):
            with self._lock:
                running = list(self._running)
            if not running:
                continue
            try:
                with database.connection_context():
                    renewed = Job.update(lease_until=_later(LEASE_SECONDS))
                    renewed.where(Job.id.in_(running), Job.state == "running").execute()
            except Exception:  # the database away for a while: the next round renews
                log.exception("job leases")


# -- notifications ----------------------------------------------------------------------------


def _notify(channel: str, payload: str) -> None:
    """Sent when the surrounding transaction commits."""
    database.execute_sql("SELECT pg_notify(%s, %s)", (channel, payload))


class JobHub:
    """One connection per process LISTENing on both channels: it wakes the runners on a
    new job and each waiter on its own job's end."""

    _shared: JobHub | None = None
    _shared_lock = threading.Lock()

    def __init__(self, db: pw.Database) -> None:
        self.database = db
        self.new_job = threading.Event()
        self._waiters: dict[int, threading.Event] = {}
        self._lock = threading.Lock()

    @classmethod
    def shared(cls) -> JobHub:
        """This process's hub for its database, started at first use (in a gunicorn
        worker: after its fork). A process that connects to another database (a test)
        gets a new one; the old one stops."""
        with cls._shared_lock:
            if cls._shared is None or cls._shared.database is not database.obj:
                cls._shared = cls(database.obj)
                threading.Thread(target=cls._shared._listen, name="job-hub", daemon=True).start()
            return cls._shared

    @contextlib.contextmanager
    def expecting(self, job_id: int) -> Iterator[threading.Event]:
        event = threading.Event()
        with self._lock:
            self._waiters[job_id] = event
        try:
            yield event
        finally:
            with self._lock:
                self._waiters.pop(job_id, None)

    def _listen(self) -> None:
        while self._current():
            try:
                self._listen_once()
            except Exception:  # the database restarted: listen again
                if self._current():
                    log.exception("job notifications")
            self._wake_all()  # what was missed meanwhile is found by looking
            threading.Event().wait(RECHECK_SECONDS)

    def _current(self) -> bool:
        return self.database is database.obj

    def _listen_once(self) -> None:
        # A connection of its own, outside peewee's per-thread ones: LISTEN needs it
        # open and in autocommit for as long as the process runs.
        db: Any = self.database  # a new psycopg2 connection: peewee's stubs leave it out
        connection = db._connect()
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(f"LISTEN {NEW_JOB_CHANNEL}; LISTEN {JOB_DONE_CHANNEL}")
            self._wake_all()
            while self._current():
                select.select([connection], [], [], RECHECK_SECONDS)
                connection.poll()
                while connection.notifies:
                    self._deliver(connection.notifies.pop(0))
        finally:
            connection.close()

    def _deliver(self, notification: Any) -> None:
        if notification.channel == NEW_JOB_CHANNEL:
            self.new_job.set()
            return
        with self._lock:
            waiter = self._waiters.get(int(notification.payload))
        if waiter is not None:
            waiter.set()

    def _wake_all(self) -> None:
        self.new_job.set()
        with self._lock:
            for event in self._waiters.values():
                event.set()
