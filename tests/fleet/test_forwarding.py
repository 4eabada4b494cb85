"""fleet.forwarding and fleet.jobs: two hosts on one PostgreSQL, in one process. Work a
host's API takes for the other host's Pis, bakes or disks is done by that host (its job
runners, woken by NOTIFY) and answered as if it were local, errors included. A host that
is down gets no new job; one pending when its host went down waits for it to return, and
a job no runner takes while its asker waits fails the request with ``host_down`` and
leaves nothing."""

from __future__ import annotations

import dataclasses
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest

from bakery.errors import BakeryError, NoPiAvailable
from bakery.fleet import Fleet, forwarding, jobs
from bakery.fleet.jobs import HostDown
from bakery.models import Bake, Disk, Event, Host, Job, Pi, PiState, database, utcnow
from tests.conftest import install_ppi
from tests.fleet.test_power import STATEFUL_PPI

pytestmark = pytest.mark.parametrize(
    "db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)


@pytest.fixture
def rack2(fleet, settings, tmp_path):
    """A second host on the same database, with its own data dir and NFS address."""
    other = Fleet(
        dataclasses.replace(
            settings, host_id="rack-2", root=tmp_path / "rack2", nfs_server="10.2.0.1"
        )
    )
    other.settings.root.mkdir()
    fleet.join_host()
    other.join_host()
    return other


@pytest.fixture
def runners(fleet):
    """Job runners of the first host (``fleet``), as its API workers run them."""
    started = fleet.job_runners(2)
    started.start()
    yield started
    started.stop()


def test_a_bake_and_unbake_through_another_host_are_done_by_the_pi_s_host(
    fleet, rack2, raspios, runners
):
    fleet.register_pi("00000001", ip="127.0.0.11")

    bake = rack2.bake("raspios", serial="00000001", user_data="#cloud-config\n{}\n")

    assert bake.host_id == fleet.settings.host_id
    assert fleet.bake_root(bake.id).is_dir()
    assert not rack2.settings.path("bakes").exists()
    assert rack2.root_export(bake) == f"127.0.0.1:{fleet.bake_root(bake.id)}"
    done = Job.get(Job.kind == "bake")
    assert (done.state, done.args) == ("done", {})  # the user-data went into the root only

    unbaked = rack2.unbake(bake.id)

    assert unbaked.state == "unbaked"
    assert not fleet.bake_dir(bake.id).exists()
    assert Pi.get(Pi.serial == "00000001").state == "available"


def test_a_bake_naming_no_pi_goes_to_a_host_with_a_free_one(fleet, rack2, raspios, runners):
    fleet.register_pi("00000001", ip="127.0.0.11")

    bake = rack2.bake("raspios")

    assert (bake.pi.serial, bake.host_id) == ("00000001", fleet.settings.host_id)
    with pytest.raises(NoPiAvailable):
        rack2.bake("raspios")


def test_the_owning_host_s_error_is_the_answer(fleet, rack2, raspios, runners):
    fleet.register_pi("00000001", ip="127.0.0.11")
    fleet.set_pi_state("00000001", PiState.BROKEN, "bad SD slot")

    with pytest.raises(NoPiAvailable) as local:
        fleet.bake("raspios", serial="00000001")
    with pytest.raises(NoPiAvailable) as forwarded:  # the same kind of error, so callers
        rack2.bake("raspios", serial="00000001")  # (the next host's turn) tell it apart

    assert (forwarded.value.status, forwarded.value.code, forwarded.value.message) == (
        local.value.status,
        local.value.code,
        local.value.message,
    )
    assert Job.get(Job.kind == "bake").state == "failed"


def test_a_disk_made_near_a_bake_is_on_the_bake_s_host_and_attaches_there(
    fleet, rack2, raspios, runners
):
    fleet.register_pi("00000001", ip="127.0.0.11")
    bake = fleet.bake("raspios", serial="00000001")

    disk = rack2.create_disk(16, near=bake.id)
    here = rack2.create_disk(16)

    assert (disk.host, disk.bake_id) == (fleet.settings.host_id, None)
    assert rack2.attach_disk(disk.id, bake.id).bake_id == bake.id
    assert (fleet.settings.root / "disks" / disk.id / "disk.img").is_file()
    with pytest.raises(BakeryError, match="attached to bakes of its own host") as refused:
        rack2.attach_disk(here.id, bake.id)  # rack-2 holds the disk, rack-1 the bake
    assert refused.value.code == "disk_on_other_host"
    assert Disk.get_by_id(here.id).bake_id is None


def stop_beating(host: Fleet) -> None:
    """Make ``host`` down: its last heartbeat long past."""
    Host.update(heartbeat_at=utcnow() - timedelta(minutes=5)).where(
        Host.name == host.settings.host_id
    ).execute()


def down_once_its_job_is_written(monkeypatch, host: Fleet) -> None:
    """``host`` stops beating as soon as a job for it is written: the job is pending when
    its host goes down."""
    send = jobs.send

    def sent_then_down(*args, **kwargs):
        job = send(*args, **kwargs)
        stop_beating(host)
        return job

    monkeypatch.setattr(jobs, "send", sent_then_down)


def asker_looks(monkeypatch) -> threading.Semaphore:
    """Released each time a waiting asker has looked whether its pending job is overdue."""
    looks = threading.Semaphore(0)
    look = jobs._cancel_if_overdue

    def looked(job, elsewhere):
        cancelled = look(job, elsewhere)
        looks.release()
        return cancelled

    monkeypatch.setattr(jobs, "_cancel_if_overdue", looked)
    return looks


def in_own_connection(call, *args, **kwargs):
    """``call`` in a thread of its own, with its own database connection."""
    with database.connection_context():
        return call(*args, **kwargs)


def test_a_host_that_is_down_gets_no_job(fleet, rack2, raspios):
    fleet.register_pi("00000001", ip="127.0.0.11")
    stop_beating(fleet)

    with pytest.raises(HostDown, match="is down"):
        rack2.bake("raspios", serial="00000001")
    with pytest.raises(NoPiAvailable):  # no other host has a free Pi
        rack2.bake("raspios")

    assert not Job.select().exists()
    assert Pi.get(Pi.serial == "00000001").state == "available"


def test_a_job_pending_when_its_host_goes_down_waits_and_is_done_when_it_returns(
    fleet, rack2, raspios, monkeypatch
):
    fleet.register_pi("00000001", ip="127.0.0.11")
    fleet.register_pi("00000002", ip="127.0.0.12")
    monkeypatch.setattr(jobs, "RECHECK_SECONDS", 0.1)
    down_once_its_job_is_written(monkeypatch, fleet)
    looks = asker_looks(monkeypatch)

    with ThreadPoolExecutor(1) as pool:
        asked = pool.submit(
            in_own_connection, rack2.bake, "raspios", serial="00000001", power_on=False
        )
        for _ in range(3):
            assert looks.acquire(timeout=30)  # the asker looked at its job, rack-1 down
        rack2.forget_ended_jobs()  # nor does a live host's clean-up cancel it
        assert Job.get(Job.kind == "bake").state == "pending"
        with pytest.raises(HostDown, match="is down"):  # but no new bake goes there
            rack2.bake("raspios", serial="00000002")
        assert not asked.done()

        fleet.join_host()  # rack-1 starts again: its runners take what waited for it
        fleet.recover()
        returned = fleet.job_runners(1)
        returned.start()
        try:
            bake = asked.result(timeout=60)
        finally:
            returned.stop()

    assert (bake.pi.serial, bake.host_id) == ("00000001", fleet.settings.host_id)
    assert fleet.bake_root(bake.id).is_dir()
    (job,) = Job.select()
    assert (job.state, job.result) == ("done", bake.id)


@pytest.mark.parametrize("goes_down", [False, True], ids=["host-live", "host-down"])
def test_a_job_no_runner_takes_while_its_asker_waits_is_cancelled_and_never_done(
    fleet, rack2, raspios, monkeypatch, goes_down
):
    fleet.register_pi("00000001", ip="127.0.0.11")
    monkeypatch.setattr(jobs, "QUEUE_SECONDS", 1)
    monkeypatch.setattr(jobs, "RECHECK_SECONDS", 0.2)
    if goes_down:
        down_once_its_job_is_written(monkeypatch, fleet)

    with pytest.raises(HostDown, match="did not take the bake within 1 s") as refused:
        rack2.bake("raspios", serial="00000001")  # rack-1 runs no runner (or is down)

    assert (refused.value.status, refused.value.code) == (503, "host_down")

    assert jobs.take(fleet.context) is None  # nothing left to take when it does
    assert Job.get(Job.kind == "bake").state == "cancelled"
    assert not Bake.select().exists()


def test_a_bake_goes_on_to_the_next_host_when_the_first_has_no_free_pi_left(
    fleet, rack2, runners, monkeypatch, settings, tmp_path, sd_image_file
):
    rack3 = Fleet(dataclasses.replace(settings, host_id="rack-3", root=tmp_path / "rack3"))
    rack3.settings.root.mkdir()
    rack3.join_host()
    rack3.register_pi("00000003", ip="127.0.0.13")
    with open(sd_image_file, "rb") as image:
        rack3.import_bakeform("raspios", image)  # rack-3's own: no copy to make
    more = rack3.job_runners(1)
    more.start()
    # rack-1 was ranked first, but its last free Pi went before the job ran
    monkeypatch.setattr(
        forwarding, "hosts_with_free_pis", lambda ctx: [fleet.settings.host_id, "rack-3"]
    )
    try:
        bake = rack2.bake("raspios", power_on=False)
    finally:
        more.stop()

    assert (bake.host_id, bake.pi.serial) == ("rack-3", "00000003")
    refused = Job.get(Job.host == fleet.settings.host_id)
    assert (refused.state, refused.error["code"]) == ("failed", "no_pi_available")


def test_a_bake_naming_no_pi_does_not_wait_for_a_host_gone_down_but_goes_on_to_the_next(
    fleet, rack2, monkeypatch, settings, tmp_path, sd_image_file
):
    rack3 = Fleet(dataclasses.replace(settings, host_id="rack-3", root=tmp_path / "rack3"))
    rack3.settings.root.mkdir()
    rack3.join_host()
    rack3.register_pi("00000003", ip="127.0.0.13")
    with open(sd_image_file, "rb") as image:
        rack3.import_bakeform("raspios", image)
    more = rack3.job_runners(1)
    more.start()
    fleet.register_pi("00000001", ip="127.0.0.11")
    monkeypatch.setattr(
        forwarding, "hosts_with_free_pis", lambda ctx: [fleet.settings.host_id, "rack-3"]
    )
    down_once_its_job_is_written(monkeypatch, fleet)  # rack-1 goes down, its job pending
    started = time.monotonic()
    try:
        bake = rack2.bake("raspios", power_on=False)
    finally:
        more.stop()

    assert (bake.host_id, bake.pi.serial) == ("rack-3", "00000003")
    assert time.monotonic() - started < jobs.QUEUE_SECONDS / 10  # not left to wait it out
    waited = Job.get(Job.host == fleet.settings.host_id)
    assert waited.state == "cancelled"  # nothing for rack-1 to do when it returns


def test_an_asker_whose_job_lost_its_lease_is_told_the_host_stopped(fleet, rack2):
    job = Job.create(
        host=fleet.settings.host_id,
        kind="unbake",
        state="running",
        start_by=far(),
        lease_until=utcnow() - timedelta(seconds=1),
    )

    with pytest.raises(HostDown, match="stopped during the unbake"):
        jobs._wait(jobs.JobHub.shared(), job, False)


def test_concurrent_runners_never_take_the_same_job(fleet, rack2):
    for _ in range(40):
        Job.create(host=fleet.settings.host_id, kind="delete_disk", args={}, start_by=far())
    taken: list[int] = []
    lock = threading.Lock()

    def take_all() -> None:
        from bakery.models import database

        with database.connection_context():
            while (job := jobs.take(fleet.context)) is not None:
                with lock:
                    taken.append(job.id)

    threads = [threading.Thread(target=take_all) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert sorted(taken) == sorted(job.id for job in Job.select())
    assert len(set(taken)) == 40


def test_a_runner_wakes_on_the_notification_not_on_its_recheck(
    fleet, rack2, raspios, runners, monkeypatch
):
    fleet.register_pi("00000001", ip="127.0.0.11")
    rack2.bake("raspios", serial="00000001")  # the runners are listening now
    Pi.create(serial="00000002", state="available", host=fleet.settings.host_id)
    monkeypatch.setattr(jobs, "RECHECK_SECONDS", 60.0)
    rack2.unbake(rack2.bake("raspios", serial="00000002", power_on=False).id)  # on 60 s waits

    started = time.monotonic()
    rack2.bake("raspios", serial="00000002", power_on=False)

    assert time.monotonic() - started < 5


def far():
    return utcnow() + timedelta(hours=1)


def test_ended_jobs_are_kept_a_day_then_forgotten(fleet, rack2):
    me = fleet.settings.host_id
    old = utcnow() - timedelta(hours=jobs.KEEP_ENDED_HOURS + 1)
    for state, finished in [("done", old), ("failed", utcnow()), ("cancelled", old)]:
        Job.create(host=me, kind="delete_disk", state=state, start_by=old, finished_at=finished)
    Job.create(host=me, kind="delete_disk", start_by=far())  # pending: kept however old
    Job.create(host="rack-2", kind="delete_disk", state="done", start_by=old, finished_at=old)

    assert fleet.forget_ended_jobs() == 2

    left = {(job.host, job.state) for job in Job.select()}
    assert left == {(me, "failed"), (me, "pending"), ("rack-2", "done")}


def power_calls(monkeypatch, *hosts: Fleet) -> list[tuple[str, str]]:
    """From now on, each power action the ``hosts`` run (still done) as (the host whose
    power controller ran it, the action)."""
    calls: list[tuple[str, str]] = []

    def recording(host: Fleet):
        run = host.power.run

        def recorded(driver, target, action):
            calls.append((host.settings.host_id, action))
            return run(driver, target, action)

        return recorded

    for host in hosts:
        monkeypatch.setattr(host.power, "run", recording(host))
    return calls


def test_power_asked_through_another_host_is_switched_by_the_pi_s_host(
    fleet, rack2, raspios, runners, monkeypatch, tmp_path, ppi_dir
):
    relay = tmp_path / "relay"
    fleet.register_pi(
        "00000001",
        ip="127.0.0.11",
        power_driver="ppi",
        power_settings={
            "program": install_ppi(ppi_dir, "relay.py", STATEFUL_PPI),
            "params": {"relay": str(relay)},
        },
    )
    bake = fleet.bake("raspios", serial="00000001", power_on=False)
    switched = power_calls(monkeypatch, fleet, rack2)

    started = rack2.power_bake(bake.id, "on")
    assert started.state == "on" and relay.read_text() == "on"
    stopped = rack2.operator_power("00000001", "off")
    assert stopped.state == "off" and relay.read_text() == "off"

    assert fleet.power_bake(bake.id, "on") == started  # a local call's answer
    assert fleet.operator_power("00000001", "off") == stopped
    me = fleet.settings.host_id
    assert switched == [(me, "on"), (me, "off"), (me, "on"), (me, "off")]
    forwarded = Job.select().where(Job.kind.in_(["power_bake", "operator_power"]))
    assert {(job.kind, job.host, job.state) for job in forwarded} == {
        ("power_bake", me, "done"),
        ("operator_power", me, "done"),
    }
    power_events = Event.select().where(Event.kind == "power", Event.pi == bake.pi)
    assert [event.data["action"] for event in power_events.order_by(Event.id)] == [
        "on",
        "off",
        "on",
        "off",
    ]


def test_a_pi_s_new_address_set_through_another_host_moves_its_owner_s_exports(
    fleet, rack2, raspios, runners
):
    fleet.register_pi("00000001", ip="127.0.0.11")
    bake = fleet.bake("raspios", serial="00000001")

    moved = rack2.update_pi("00000001", ip="127.0.0.21", labels=["rack-a"])

    assert (moved.last_ip, moved.labels) == ("127.0.0.21", ["rack-a"])
    assert Job.get(Job.kind == "update_pi").state == "done"
    exports = Path(fleet.settings.exports_file).read_text()
    assert bake.id in exports and "127.0.0.21" in exports and "127.0.0.11" not in exports


def test_a_pi_moved_to_another_host_is_changed_by_that_host_from_then_on(fleet, rack2, runners):
    fleet.register_pi("00000001", ip="127.0.0.11")

    assert rack2.update_pi("00000001", host="rack-2").host == "rack-2"  # rack-1's job
    with pytest.raises(BakeryError, match="no Bakery host named 'rack-9'"):
        rack2.update_pi("00000001", host="rack-9")  # rack-2's own now: no job

    assert [job.host for job in Job.select().order_by(Job.id)] == [fleet.settings.host_id]
