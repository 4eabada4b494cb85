"""The fleet: everything that changes a Pi, a bake, a bakeform or a disk goes through here.

``Fleet`` is a thin facade, in the style of Ironic's conductor manager: each method is the
function of the module that owns the work, run with the fleet's one ``FleetContext``:

- ``states``: the Pi and bake state tables; a move is a conditional UPDATE and its event
  in one transaction, so two workers or two hosts never both move the same Pi;
- ``events`` (the timeline) and ``queries`` (lookups and lists for the API and CLI);
- ``pis``, ``power``, ``bakeforms``, ``allocation`` (the claim), ``bakes`` (claim → clone
  root → season → export → power on, any failure undoing every step done), ``disks``;
- ``exports`` (what NFS exports, from the database), ``netboot`` (what a booting Pi is
  served: the ``BootSource`` the netboot servers use), ``recovery`` (what a crash left);
- ``gauges`` (the fleet's state for a metrics scrape, from the database).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Concatenate, Generic, ParamSpec, TypeVar, cast, overload

from .. import disks as disk_images
from .. import stemcell
from ..config import Settings
from ..models import (
    BOOT_PROTOCOLS,
    Bake,
    Bakeform,
    BakeState,
    Disk,
    Event,
    Pi,
    PiState,
    Snapshot,
    shared_database,
    utcnow,
)
from ..power import PowerController, PowerResult
from . import (
    bakeforms,
    bakes,
    boots,
    copies,
    disks,
    exports,
    forwarding,
    hosts,
    jobs,
    netboot,
    pis,
    queries,
    recovery,
)
from .actors import Actor, acting_as
from .context import FleetContext
from .events import BOOT_PHASES
from .gauges import FleetGauges
from .hosts import HEARTBEAT_SECONDS, HostStatus
from .jobs import JobRunners
from .netboot import FleetBootSource
from .power import operator_power, restore_power

#: What ``create_disk`` can format a disk with.
DISK_FILESYSTEMS = disk_images.FILESYSTEMS

__all__ = [
    "BOOT_PHASES",
    "HEARTBEAT_SECONDS",
    "HostStatus",
    "JobRunners",
    "BOOT_PROTOCOLS",
    "DISK_FILESYSTEMS",
    "Actor",
    "Bake",
    "Bakeform",
    "BakeState",
    "Disk",
    "Event",
    "Fleet",
    "FleetBootSource",
    "FleetContext",
    "Pi",
    "PiState",
    "PowerResult",
    "Snapshot",
    "acting_as",
    "shared_database",
    "utcnow",
]

P = ParamSpec("P")
R = TypeVar("R")


class _InContext(Generic[P, R]):
    """A facade method that is a fleet module's function run with the fleet's context:
    its parameters (but the context) and its docstring are the function's own, so each
    signature is written once, where the work is."""

    def __init__(
        self, func: Callable[Concatenate[FleetContext, P], R], *, on_owning_host: bool = False
    ) -> None:
        self.func = func
        self.on_owning_host = on_owning_host
        self.__doc__ = func.__doc__

    @overload
    def __get__(self, fleet: None, owner: type[Fleet]) -> _InContext[P, R]: ...

    @overload
    def __get__(self, fleet: Fleet, owner: type[Fleet]) -> Callable[P, R]: ...

    def __get__(self, fleet: Fleet | None, owner: type[Fleet]) -> _InContext[P, R] | Callable[P, R]:
        if fleet is None:
            return self
        context, func = fleet.context, self.func
        if self.on_owning_host:

            def on_owning_host(*args: P.args, **kwargs: P.kwargs) -> R:
                return cast(R, forwarding.call(context, func, *args, **kwargs))

            return on_owning_host

        def in_context(*args: P.args, **kwargs: P.kwargs) -> R:
            return func(context, *args, **kwargs)

        return in_context


def _on_owning_host(func: Callable[Concatenate[FleetContext, P], R]) -> _InContext[P, R]:
    """A facade method whose work the host owning what it touches does
    (``fleet.forwarding``): this one, or another one through a job."""
    return _InContext(func, on_owning_host=True)


class Fleet:
    """The orchestration for one data directory and database (one per process)."""

    def __init__(self, settings: Settings, power: PowerController | None = None) -> None:
        self.context = FleetContext.create(settings, power)

    @property
    def settings(self) -> Settings:
        return self.context.settings

    @property
    def power(self) -> PowerController:
        return self.context.power

    def boot_source(self) -> FleetBootSource:
        """This fleet as the TFTP server and dnsmasq's supervisor see it."""
        return FleetBootSource(self.context)

    def gauges(self) -> FleetGauges:
        """The fleet's gauges (Pis and bakes by state, boots), as a collector a metrics
        scrape reads from the database."""
        return FleetGauges(self.settings.boot_deadline)

    # -- where things are ---------------------------------------------------------------

    def bakeform_dir(self, name: str) -> Path:
        return self.context.bakeform_dir(name)

    def bake_dir(self, bake_id: str) -> Path:
        return self.context.bake_dir(bake_id)

    def bake_root(self, bake_id: str) -> Path:
        return self.context.bake_root(bake_id)

    def bake_boot(self, bake_id: str) -> Path:
        return self.context.bake_boot(bake_id)

    def root_export(self, bake: Bake) -> str:
        """The NFS export of a bake's root, as its Pi mounts it (from the bake's host)."""
        return hosts.export_on(self.context, bake.host_id, self.bake_root(bake.id))

    def disk_export(self, disk: Disk) -> str:
        path = disk_images.disk_dir(self.settings, disk.id)
        return hosts.export_on(self.context, disk.host, path)

    disk_device = staticmethod(stemcell.disk_device)

    # -- lookups and lists --------------------------------------------------------------

    check_database = staticmethod(queries.check_database)
    get_pi = staticmethod(queries.get_pi)
    get_bake = staticmethod(queries.get_bake)
    get_live_bake = staticmethod(queries.get_live_bake)
    get_bakeform = staticmethod(queries.get_bakeform)
    get_disk = staticmethod(queries.get_disk)
    get_snapshot = staticmethod(queries.get_snapshot)
    list_pis = staticmethod(queries.list_pis)
    list_bakes = staticmethod(queries.list_bakes)
    list_bakeforms = staticmethod(queries.list_bakeforms)
    list_disks = staticmethod(queries.list_disks)
    list_snapshots = staticmethod(queries.list_snapshots)
    timeline = staticmethod(queries.timeline)
    boot_history = staticmethod(queries.boot_history)
    report_userspace = staticmethod(boots.report_userspace)

    def boot_status(self, pi: Pi) -> str | None:
        """up, booting or stalled for a baked Pi (None for one not booting a bake)."""
        return boots.boot_status(pi, self.settings.boot_deadline)

    console = staticmethod(queries.console)

    # -- hosts ----------------------------------------------------------------------------

    join_host = _InContext(hosts.join)
    heartbeat = _InContext(hosts.heartbeat)
    leave_host = _InContext(hosts.leave)
    forget_ended_jobs = _InContext(jobs.forget_ended)
    list_hosts = staticmethod(hosts.list_hosts)
    down_hosts = staticmethod(hosts.down_hosts)

    # -- Pis and power --------------------------------------------------------------------

    register_pi = _InContext(pis.register_pi)
    update_pi = _on_owning_host(pis.update_pi)
    set_pi_state = staticmethod(pis.set_pi_state)
    delete_pi = staticmethod(pis.delete_pi)
    operator_power = _on_owning_host(operator_power)
    restore_power = _InContext(restore_power)

    # -- bakeforms, bakes, disks ------------------------------------------------------------

    import_bakeform = _InContext(bakeforms.import_bakeform)
    bakeform_copies = staticmethod(copies.where)
    bakeform_upload = _InContext(copies.upload_of)
    delete_bakeform = _InContext(bakeforms.delete_bakeform)
    bake = _on_owning_host(bakes.bake)
    unbake = _on_owning_host(bakes.unbake)
    power_bake = _on_owning_host(bakes.power_bake)
    set_agent_settings = _on_owning_host(bakes.set_agent_settings)
    agent_settings_for_caller = staticmethod(bakes.agent_settings_for_caller)
    shown_agent_settings = staticmethod(bakes.shown_agent_settings)
    set_bake_metadata = staticmethod(bakes.set_bake_metadata)
    create_disk = _on_owning_host(disks.create_disk)
    delete_disk = _on_owning_host(disks.delete_disk)
    attach_disk = _on_owning_host(disks.attach_disk)
    detach_disk = _on_owning_host(disks.detach_disk)
    resize_disk = _on_owning_host(disks.resize_disk)
    set_disk_metadata = staticmethod(disks.set_disk_metadata)
    snapshot_disk = _on_owning_host(disks.snapshot_disk)
    delete_snapshot = _on_owning_host(disks.delete_snapshot)

    # -- exports, netboot, recovery -------------------------------------------------------

    desired_exports = _InContext(exports.desired_exports)
    publish_exports = _InContext(exports.publish_exports)
    boot_target = _InContext(netboot.boot_target)
    turn_away = _InContext(netboot.turn_away)
    recover = _InContext(recovery.recover)

    def job_runners(self, count: int) -> jobs.JobRunners:
        """``count`` threads doing the jobs other hosts write for this one (not started)."""
        return jobs.JobRunners(self.context, forwarding.do_job, count)
