"""Jobs: how the host that takes a request has another host do it, through PostgreSQL.

A bake, an unbake, a disk or a power call touches one host's data dir, NFS exports or
power devices: the host that owns the Pi or the disk does it. When a request for it
reaches another host's API, that API writes a ``Job`` row for the owning host and waits;
the owning host's job runners (threads in each of its API workers) take pending jobs with
``SELECT ... FOR UPDATE SKIP LOCKED``, so two runners never take the same one, do the
work for the asker's token, and write the result or the error back. ``NOTIFY`` wakes
runners when a job is written and the waiter when it ends: no polling delay. A lost
notification (a dropped connection) costs at most ``RECHECK_SECONDS``.

The asker waits until the job ends, as long as the owning host is alive: a job not
started within ``PICKUP_SECONDS`` (the host is down or stuck) is cancelled and the
request fails with ``host_down``; one whose host dies while running it fails the same
way, and the host's recovery undoes what it left when it comes back. SQLite is one host's
database: there, nothing goes through jobs.
"""

from __future__ import annotations

import contextlib
import logging
import select
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict
from datetime import timedelta
from typing import Any

import peewee as pw

from ..errors import BakeryError, Unavailable
from ..models import Job, database, utcnow
from .actors import Actor, acting_as, current_actor
from .context import FleetContext
from .hosts import LIVE_SECONDS, get_host, is_live

log = logging.getLogger(__name__)

#: Seconds a pending job waits for its host to take it: a live host takes it at once.
PICKUP_SECONDS = LIVE_SECONDS
#: Seconds between two looks at the database when no notification came.
RECHECK_SECONDS = 5.0
NEW_JOB_CHANNEL = "bakery_job_new"
JOB_DONE_CHANNEL = "bakery_job_done"
ENDED = ("done", "failed", "cancelled")


def shared_database() -> bool:
    """Whether several hosts may share this database (PostgreSQL): only then do jobs run."""
    return isinstance(database.obj, pw.PostgresqlDatabase)


class HostDown(Unavailable):
    code = "host_down"


# -- the asking side ------------------------------------------------------------------------


def ask(host: str, kind: str, args: dict[str, Any]) -> Any:
    """Have ``host`` run ``kind`` with ``args`` for the current actor; its result (JSON) or
    its error, raised here as the owning host raised it."""
    hub = JobHub.shared()
    ended = _wait(hub, send(host, kind, args))
    if ended.state == "done":
        return ended.result
    if ended.state == "cancelled":
        raise HostDown(f"host {host!r} did not take the {kind} within {PICKUP_SECONDS:.0f} s")
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
            start_by=utcnow() + timedelta(seconds=PICKUP_SECONDS),
        )
        _notify(NEW_JOB_CHANNEL, host)
    return job


def _wait(hub: JobHub, job: Job) -> Job:
    with hub.expecting(job.id) as ended:
        while True:
            job = Job.get_by_id(job.id)
            if job.state in ENDED:
                return job
            if job.state == "pending" and utcnow() > job.start_by:
                _cancel(Job.id == job.id)
                continue
            if job.state == "running" and not is_live(get_host(job.host)):
                raise HostDown(
                    f"host {job.host!r} stopped during the {job.kind}; "
                    "its recovery undoes what it left when it starts again"
                )
            ended.wait(RECHECK_SECONDS)
            ended.clear()


def _cancel(*which: pw.Expression) -> None:
    """Cancel the pending jobs ``which`` selects (a running one finishes)."""
    Job.update(state="cancelled", args={}, finished_at=utcnow()).where(
        Job.state == "pending", *which
    ).execute()


#: Hours an ended job is kept (to read what became of a request) before it is deleted.
KEEP_ENDED_HOURS = 24


def forget_ended(ctx: FleetContext) -> int:
    """Delete this host's jobs that ended more than ``KEEP_ENDED_HOURS`` ago."""
    ended_before = utcnow() - timedelta(hours=KEEP_ENDED_HOURS)
    return int(
        Job.delete()
        .where(
            Job.host == ctx.settings.host_id, Job.state.in_(ENDED), Job.finished_at < ended_before
        )
        .execute()
    )


def remote_error(error: dict[str, Any]) -> BakeryError:
    """The error a job ended with, as the API answers it: same status, code and message."""
    raised = BakeryError(error.get("message", "the owning host failed"), code=error.get("code"))
    raised.status = int(error.get("status", 500))
    raised.details = error.get("details")
    return raised


# -- the owning side ------------------------------------------------------------------------


def take(ctx: FleetContext) -> Job | None:
    """The oldest pending job for this host, now ``running``; None when there is none.
    Jobs whose asker has given up are cancelled on the way."""
    me = ctx.settings.host_id
    _cancel(Job.host == me, Job.start_by < utcnow())
    with database.atomic():
        query = Job.select().where(Job.host == me, Job.state == "pending").order_by(Job.id)
        # peewee takes the locking clause as written; its stubs only know True
        locked = query.for_update("FOR UPDATE SKIP LOCKED")  # type: ignore[arg-type]
        job: Job | None = locked.limit(1).first()
        if job is None:
            return None
        Job.update(state="running").where(Job.id == job.id).execute()
    return job


def run(job: Job, work: Callable[[dict[str, Any]], Any]) -> None:
    """Do ``job`` for its asker and write how it ended (its arguments are dropped then:
    they may hold a bake's user-data, which belongs in the root only)."""
    actor = Actor(**job.actor) if job.actor else None
    ended: dict[str, Any]
    try:
        with acting_as(actor):
            ended = {"state": "done", "result": work(job.args)}
    except BakeryError as exc:
        ended = {"state": "failed", "error": _error_of(exc.status, exc.code, exc.message)}
        ended["error"]["details"] = exc.details
    except Exception as exc:
        log.exception("job %d (%s) failed", job.id, job.kind)
        message = f"the {job.kind} failed on host {job.host}: {type(exc).__name__}"
        ended = {"state": "failed", "error": _error_of(500, "internal_error", message)}
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
    ``stop()``."""

    def __init__(
        self, ctx: FleetContext, work: Callable[[FleetContext, Job], None], count: int
    ) -> None:
        self.ctx = ctx
        self.work = work
        self.count = count
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        hub = JobHub.shared()
        for number in range(self.count):
            thread = threading.Thread(
                target=self._serve, args=(hub,), name=f"job-runner-{number}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stopping.set()
        JobHub.shared().new_job.set()

    def _serve(self, hub: JobHub) -> None:
        while not self._stopping.is_set():
            try:
                with database.connection_context():
                    job = take(self.ctx)
                    if job is not None:
                        self.work(self.ctx, job)
                        continue
            except Exception:  # the database away for a while: try again
                log.exception("job runner")
            hub.new_job.wait(RECHECK_SECONDS)
            hub.new_job.clear()


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
