"""The fleet: everything that changes a Pi, a bake, a bakeform or a disk goes through here.

``Fleet`` is a thin facade, in the style of Ironic's conductor manager: each method hands
its work to the module that owns it, all of them sharing one ``FleetContext``:

- ``states``: the Pi and bake state tables; a move is a conditional UPDATE and its event
  in one transaction, so two workers or two hosts never both move the same Pi;
- ``events`` (the timeline) and ``queries`` (lookups and lists for the API and CLI);
- ``pis``, ``power``, ``bakeforms``, ``allocation`` (the claim), ``bakes`` (claim → clone
  root → season → export → power on, any failure undoing every step done), ``disks``;
- ``exports`` (what NFS exports, from the database), ``netboot`` (what a booting Pi is
  served: the ``BootSource`` the netboot servers use), ``recovery`` (what a crash left).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from .. import disks as disk_images
from ..config import Settings
from ..exports import Export
from ..models import Bake, Bakeform, BakeState, Disk, Event, Pi, PiState, Snapshot
from ..netboot.bootfiles import BootTarget
from ..power import PowerAction, PowerController, PowerResult
from . import bakeforms, bakes, disks, events, exports, netboot, pis, power, queries, recovery
from .context import FleetContext
from .netboot import FleetBootSource

__all__ = [
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
]


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

    # -- where things are ---------------------------------------------------------------

    def bakeform_dir(self, name: str) -> Path:
        return self.context.bakeform_dir(name)

    def bake_dir(self, bake_id: str) -> Path:
        return self.context.bake_dir(bake_id)

    def bake_root(self, bake_id: str) -> Path:
        return self.context.bake_root(bake_id)

    def bake_boot(self, bake_id: str) -> Path:
        return self.context.bake_boot(bake_id)

    def root_export(self, bake_id: str) -> str:
        """The NFS export of a bake's root, as its Pi mounts it."""
        return f"{self.settings.nfs_server}:{self.bake_root(bake_id)}"

    def disk_export(self, disk_id: str) -> str:
        return f"{self.settings.nfs_server}:{disk_images.disk_dir(self.settings, disk_id)}"

    # -- lookups and lists --------------------------------------------------------------

    def check_database(self) -> None:
        """Raise unless the database answers (the health check)."""
        queries.check_database()

    def get_pi(self, serial: str) -> Pi:
        return queries.get_pi(serial)

    def get_bake(self, bake_id: str) -> Bake:
        return queries.get_bake(bake_id)

    def get_live_bake(self, bake_id: str) -> Bake:
        return queries.get_live_bake(bake_id)

    def get_bakeform(self, name: str) -> Bakeform:
        return queries.get_bakeform(name)

    def get_disk(self, disk_id: str) -> Disk:
        return queries.get_disk(disk_id)

    def get_snapshot(self, snapshot_id: str) -> Snapshot:
        return queries.get_snapshot(snapshot_id)

    def list_pis(self, state: str | None = None, labels: Sequence[str] = ()) -> list[Pi]:
        return queries.pis(state, labels)

    def list_bakes(
        self, *, include_finished: bool = False, serial: str | None = None
    ) -> list[Bake]:
        return queries.bakes(include_finished=include_finished, serial=serial)

    def list_bakeforms(self) -> list[Bakeform]:
        return queries.bakeforms()

    def list_disks(self, bake_id: str | None = None) -> list[Disk]:
        return queries.disks(bake_id)

    def list_snapshots(self, disk_id: str) -> list[Snapshot]:
        return queries.snapshots(disk_id)

    def timeline(self, serial: str, *, bake_id: str | None = None, limit: int = 200) -> list[Event]:
        return events.timeline(self.get_pi(serial), bake_id=bake_id, limit=limit)

    # -- Pis and power ------------------------------------------------------------------

    def register_pi(
        self,
        serial: str,
        *,
        mac: str | None = None,
        model: str = "unknown",
        power_driver: str | None = None,
        power_settings: dict[str, Any] | None = None,
        labels: Sequence[str] = (),
        ip: str | None = None,
    ) -> Pi:
        return pis.register_pi(
            self.context,
            serial,
            mac=mac,
            model=model,
            power_driver=power_driver,
            power_settings=power_settings,
            labels=labels,
            ip=ip,
        )

    def update_pi(self, serial: str, **changes: Any) -> Pi:
        return pis.update_pi(self.context, serial, **changes)

    def set_pi_state(self, serial: str, state: PiState, reason: str = "") -> Pi:
        return pis.set_pi_state(serial, state, reason)

    def delete_pi(self, serial: str) -> None:
        pis.delete_pi(serial)

    def operator_power(self, serial: str, action: PowerAction) -> PowerResult:
        return power.operator_power(self.context, serial, action)

    def restore_power(self) -> None:
        power.restore_power(self.context)

    # -- bakeforms ------------------------------------------------------------------------

    def import_bakeform(
        self,
        name: str,
        stream: IO[bytes],
        *,
        replace: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> Bakeform:
        return bakeforms.import_bakeform(
            self.context, name, stream, replace=replace, progress=progress
        )

    def delete_bakeform(self, name: str) -> None:
        bakeforms.delete_bakeform(self.context, name)

    # -- bakes ----------------------------------------------------------------------------

    def bake(
        self,
        bakeform_name: str,
        *,
        serial: str | None = None,
        labels: Sequence[str] = (),
        model: str | None = None,
        hostname: str | None = None,
        agent_settings: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        disk_ids: Sequence[str] = (),
        power_on: bool = True,
    ) -> Bake:
        return bakes.bake(
            self.context,
            bakeform_name,
            serial=serial,
            labels=labels,
            model=model,
            hostname=hostname,
            agent_settings=agent_settings,
            metadata=metadata,
            disk_ids=disk_ids,
            power_on=power_on,
        )

    def unbake(self, bake_id: str) -> Bake:
        return bakes.unbake(self.context, bake_id)

    def power_bake(self, bake_id: str, action: PowerAction) -> PowerResult:
        return bakes.power_bake(self.context, bake_id, action)

    def set_agent_settings(self, bake_id: str, agent_settings: dict[str, Any]) -> Bake:
        return bakes.set_agent_settings(self.context, bake_id, agent_settings)

    def agent_settings_for_address(self, ip: str) -> dict[str, Any]:
        return bakes.agent_settings_for_address(ip)

    def set_bake_metadata(self, bake_id: str, metadata: dict[str, Any]) -> Bake:
        return bakes.set_bake_metadata(bake_id, metadata)

    # -- disks ----------------------------------------------------------------------------

    def create_disk(
        self,
        size_mib: int,
        *,
        bake_id: str | None = None,
        ephemeral: bool = False,
        metadata: dict[str, Any] | None = None,
    ) -> Disk:
        return disks.create_disk(
            self.context, size_mib, bake_id=bake_id, ephemeral=ephemeral, metadata=metadata
        )

    def delete_disk(self, disk_id: str) -> None:
        disks.delete_disk(self.context, disk_id)

    def attach_disk(self, disk_id: str, bake_id: str) -> Disk:
        return disks.attach_disk(self.context, disk_id, bake_id)

    def detach_disk(self, disk_id: str) -> Disk:
        return disks.detach_disk(self.context, disk_id)

    def resize_disk(self, disk_id: str, size_mib: int) -> Disk:
        return disks.resize_disk(self.context, disk_id, size_mib)

    def set_disk_metadata(self, disk_id: str, metadata: dict[str, Any]) -> Disk:
        return disks.set_disk_metadata(disk_id, metadata)

    def snapshot_disk(self, disk_id: str, metadata: dict[str, Any] | None = None) -> Snapshot:
        return disks.snapshot_disk(self.context, disk_id, metadata)

    def delete_snapshot(self, snapshot_id: str) -> None:
        disks.delete_snapshot(self.context, snapshot_id)

    # -- exports, netboot, recovery -------------------------------------------------------

    def desired_exports(self) -> list[Export]:
        return exports.desired_exports(self.context)

    def publish_exports(self) -> None:
        exports.publish_exports(self.context)

    def boot_target(self, serial: str, ip: str, model: str | None = None) -> BootTarget | None:
        return netboot.boot_target(self.context, serial, ip, model)

    def turn_away(self, serial: str) -> None:
        netboot.turn_away(self.context, serial)

    def recover(self) -> dict[str, int]:
        return recovery.recover(self.context)
