"""fleet.hosts: the Bakery hosts sharing one database. One live process per host name
(a second would recover, so roll back, the first one's live bakes), a crashed one's name
taken over at once on its own machine, and each Pi belonging to one host."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
from datetime import timedelta

import pytest

from bakery.errors import Conflict, InvalidInput, NoPiAvailable
from bakery.fleet import Fleet, hosts
from bakery.models import Host, Pi, utcnow

#: Where no jobs carry work to the owning host (on PostgreSQL they do:
#: tests/fleet/test_forwarding.py), a host refuses work on another host's Pis and bakes.
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def held_by(name: str, *, machine: str | None = None, pid: int | None = None, age: float = 0):
    """Make host ``name``'s row say another process holds it."""
    Host.update(
        instance="someone-else",
        machine=machine or os.uname().nodename,
        pid=pid or os.getpid(),
        heartbeat_at=utcnow() - timedelta(seconds=age),
        stopped=False,
    ).where(Host.name == name).execute()


def test_a_second_live_process_with_the_same_host_name_is_refused(fleet):
    fleet.join_host()
    held_by(fleet.settings.host_id, machine="rack-2")

    with pytest.raises(Conflict, match="rack-2") as refused:
        fleet.join_host()

    assert refused.value.code == "host_taken"
    assert "give this one its own host_id" in refused.value.message


def test_a_host_whose_heartbeat_is_stale_is_taken_over(fleet):
    fleet.join_host()
    held_by(fleet.settings.host_id, machine="rack-2", age=hosts.LIVE_SECONDS + 1)

    instance = fleet.join_host()

    assert Host.get(Host.name == fleet.settings.host_id).instance == instance


def test_a_crashed_process_of_this_machine_is_taken_over_at_once(fleet):
    fleet.join_host()
    gone = subprocess.Popen(["true"])
    gone.wait()
    held_by(fleet.settings.host_id, pid=gone.pid)

    assert fleet.join_host()


def test_a_killed_but_unreaped_process_counts_as_gone(fleet):
    fleet.join_host()
    zombie = subprocess.Popen(["sleep", "60"])
    os.kill(zombie.pid, signal.SIGKILL)
    try:
        os.waitid(os.P_PID, zombie.pid, os.WEXITED | os.WNOWAIT)  # dead, not reaped
        held_by(fleet.settings.host_id, pid=zombie.pid)

        assert fleet.join_host()
    finally:
        zombie.wait()


def test_a_running_process_of_this_machine_keeps_its_name(fleet):
    fleet.join_host()
    other = subprocess.Popen(["sleep", "60"])
    try:
        held_by(fleet.settings.host_id, pid=other.pid)
        with pytest.raises(Conflict, match=f"pid {other.pid}"):
            fleet.join_host()
    finally:
        other.kill()
        other.wait()


def test_a_clean_stop_frees_the_name_at_once(fleet):
    instance = fleet.join_host()
    fleet.leave_host(instance)
    Host.update(machine="rack-2").execute()

    assert fleet.join_host()


def test_a_heartbeat_says_whether_this_process_still_holds_the_name(fleet):
    instance = fleet.join_host()
    Host.update(heartbeat_at=utcnow() - timedelta(seconds=20)).execute()

    assert fleet.heartbeat(instance)
    (host,) = fleet.list_hosts()
    assert host.live and (utcnow() - host.heartbeat_at).total_seconds() < 5
    assert host.data_bytes > 0 and 0 < host.data_free_bytes <= host.data_bytes
    held_by(fleet.settings.host_id, machine="rack-2")
    assert not fleet.heartbeat(instance)


def test_each_pi_belongs_to_the_host_that_registered_it_or_saw_it_first(fleet, settings):
    fleet.join_host()
    fleet.register_pi("00000001")
    Pi.create(serial="00000002", state="available")  # from before hosts: nobody's yet
    other = Fleet(dataclasses.replace(settings, host_id="rack-2"))
    other.join_host()
    other.boot_target("00000002", "127.0.0.12")
    other.boot_target("00000003", "127.0.0.13")  # discovered by rack-2
    fleet.boot_target("00000003", "127.0.0.13")  # rack-2's already

    owners = {pi.serial: pi.host for pi in Pi.select()}

    assert owners == {"00000001": settings.host_id, "00000002": "rack-2", "00000003": "rack-2"}
    listed = {host.name: (host.live, host.pis) for host in fleet.list_hosts()}
    assert listed == {settings.host_id: (True, 1), "rack-2": (True, 2)}


@SQLITE_ONLY  # on PostgreSQL the second change is rack-2's job: test_forwarding.py
def test_an_operator_moves_a_pi_only_to_a_host_that_exists(fleet, settings):
    fleet.join_host()
    Fleet(dataclasses.replace(settings, host_id="rack-2")).join_host()
    fleet.register_pi("00000001")

    assert fleet.update_pi("00000001", host="rack-2").host == "rack-2"
    with pytest.raises(InvalidInput, match="host: no Bakery host named 'rack-9'"):
        fleet.update_pi("00000001", host="rack-9")
    assert Pi.get(Pi.serial == "00000001").host == "rack-2"


@pytest.fixture
def rack2(fleet, settings):
    """A second host on the same database (and, here, the same data dir)."""
    other = Fleet(dataclasses.replace(settings, host_id="rack-2"))
    fleet.join_host()
    other.join_host()
    return other


@SQLITE_ONLY
def test_a_host_bakes_only_its_own_pis(fleet, rack2, raspios):
    fleet.register_pi("00000001", ip="127.0.0.11")

    with pytest.raises(Conflict, match="belongs to host") as refused:
        rack2.bake("raspios", serial="00000001")
    with pytest.raises(NoPiAvailable):
        rack2.bake("raspios")

    assert refused.value.code == "pi_on_other_host"
    assert Pi.get(Pi.serial == "00000001").state == "available"
    assert fleet.bake("raspios").pi.serial == "00000001"


def test_a_host_serves_exports_and_boot_files_of_its_own_bakes_only(fleet, rack2, raspios):
    fleet.register_pi("00000001", ip="127.0.0.11")
    bake = fleet.bake("raspios", serial="00000001")

    assert rack2.boot_target("00000001", "127.0.0.11") is None
    assert rack2.desired_exports() == []
    assert fleet.boot_target("00000001", "127.0.0.11").bake_id == bake.id
    assert [export.tag for export in fleet.desired_exports()] == [bake.id]


@SQLITE_ONLY
def test_a_bake_is_unbaked_only_by_the_host_that_holds_its_root(fleet, rack2, raspios):
    fleet.register_pi("00000001", ip="127.0.0.11")
    bake = fleet.bake("raspios", serial="00000001")

    with pytest.raises(Conflict, match="unbake it through that host's API") as refused:
        rack2.unbake(bake.id)

    assert refused.value.code == "bake_on_other_host"
    assert fleet.get_bake(bake.id).state == "baked"
    assert fleet.bake_root(bake.id).is_dir()
