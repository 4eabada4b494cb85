"""The fleet: Pi states, allocation, and the bake / unbake orchestration.

Everything that changes a Pi goes through here, so the rules live in one place:

- the Pi state machine is the ``TRANSITIONS`` table; a transition is one
  conditional UPDATE (``WHERE state = <from>``), so two gunicorn workers or two
  bakery hosts sharing PostgreSQL can never both move the same Pi;
- a bake is claim → clone root → season → export → power on, and any failure
  undoes every step already done;
- every transition and every step is an Event: the Pi's timeline;
- ``recover()`` runs at start and leaves nothing half-made behind a crash.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import logging
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import peewee as pw

from . import disks, exports, identifiers, images, neighbours, roots, stemcell
from .config import Settings
from .errors import (
    Conflict,
    InvalidInput,
    NoPiAvailable,
    NotFound,
    NotSupported,
    PowerFailed,
    StorageFailed,
    TooLarge,
)
from .models import (
    LIVE_BAKE_STATES,
    Bake,
    Bakeform,
    BakeState,
    Disk,
    Event,
    Pi,
    PiState,
    Snapshot,
    database,
    utcnow,
    write_transaction,
)
from .netboot import bootfiles
from .power import PowerController, PowerError, PowerResult, PowerTarget, driver_class

log = logging.getLogger(__name__)

S = PiState
#: The Pi state machine: (from, to) → what the move means. Nothing else moves a Pi.
TRANSITIONS: dict[tuple[PiState, PiState], str] = {
    (S.DISCOVERED, S.AVAILABLE): "accepted",
    (S.AVAILABLE, S.PREPARING): "claimed for a bake",
    (S.PREPARING, S.BAKED): "baked",
    (S.PREPARING, S.AVAILABLE): "bake rolled back",
    (S.BAKED, S.UNBAKING): "unbaking",
    (S.UNBAKING, S.AVAILABLE): "unbaked",
    (S.BROKEN, S.AVAILABLE): "repaired",
    **{(state, S.BROKEN): "broken" for state in PiState if state is not S.BROKEN},
}

STAGING_PREFIX = ".incoming-"
TRASH_PREFIX = ".trash-"
#: Pis left ``discovered`` (waiting for an operator) beyond which new serials are only
#: logged: far more than a rack holds, yet a host on the Pi LAN sending requests with
#: made-up serials cannot grow the fleet table without end.
MAX_DISCOVERED = 1024
#: Seconds between two timeline events or log lines about the same refused request.
QUIET_REPEATS = 60.0


def allowed(current: PiState, target: PiState) -> bool:
    return (current, target) in TRANSITIONS


class Fleet:
    """The orchestration for one data directory and database (one per process)."""

    def __init__(self, settings: Settings, power: PowerController | None = None) -> None:
        self.settings = settings
        self.power = power or PowerController(settings, record=self._record_power)
        self._said: dict[tuple[str, int], float] = {}

    # -- paths ---------------------------------------------------------------------------

    def bakeform_dir(self, name: str) -> Path:
        return self.settings.path("bakeforms", identifiers.name(name, "bakeform name"))

    def bake_dir(self, bake_id: str) -> Path:
        return self.settings.path("bakes", identifiers.object_id(bake_id, "bake id"))

    def bake_root(self, bake_id: str) -> Path:
        return self.bake_dir(bake_id) / "root"

    def bake_boot(self, bake_id: str) -> Path:
        """The boot files a bake's Pi is served: its own links to its bakeform's."""
        return self.bake_dir(bake_id) / "boot"

    # -- events --------------------------------------------------------------------------

    def record(
        self, pi: Pi | None, kind: str, message: str, bake_id: str | None = None, **data: Any
    ) -> None:
        Event.create(pi=pi, kind=kind, message=message, bake_id=bake_id, data=data)

    def _record_power(self, serial: str, message: str, data: dict) -> None:
        pi = Pi.get_or_none(Pi.serial == serial)
        self.record(pi, "power", message, pi.bake_id if pi else None, **data)

    # -- lookups -------------------------------------------------------------------------

    def get_pi(self, serial: str) -> Pi:
        try:
            serial = identifiers.serial(serial)
        except identifiers.InvalidIdentifier as exc:
            raise NotFound(str(exc), code="pi_not_found") from None
        pi = Pi.get_or_none(Pi.serial == serial)
        if pi is None:
            raise NotFound(f"no Pi with serial {serial}", code="pi_not_found")
        return pi

    def get_bake(self, bake_id: str) -> Bake:
        bake = Bake.get_or_none(Bake.id == bake_id) if identifiers.ID_RE.match(bake_id) else None
        if bake is None:
            raise NotFound(f"no bake {bake_id!r}", code="bake_not_found")
        return bake

    def get_live_bake(self, bake_id: str) -> Bake:
        bake = self.get_bake(bake_id)
        if bake.state not in LIVE_BAKE_STATES:
            raise NotFound(f"bake {bake_id} was unbaked", code="bake_not_found")
        return bake

    def get_bakeform(self, name: str) -> Bakeform:
        bakeform = Bakeform.get_or_none(Bakeform.name == name)
        if bakeform is None:
            raise NotFound(f"no bakeform named {name!r}", code="bakeform_not_found")
        return bakeform

    def get_disk(self, disk_id: str) -> Disk:
        disk = Disk.get_or_none(Disk.id == disk_id) if identifiers.ID_RE.match(disk_id) else None
        if disk is None:
            raise NotFound(f"no disk {disk_id!r}", code="disk_not_found")
        return disk

    # -- Pi state machine ----------------------------------------------------------------

    def transition(
        self, pi: Pi, target: PiState, reason: str = "", *, expect: PiState | None = None, **fields
    ) -> Pi:
        """Move ``pi`` to ``target`` if it is still where we last saw it; record why."""
        current = PiState(expect or pi.state)
        if not allowed(current, target):
            raise Conflict(
                f"Pi {pi.serial} cannot go from {current.value} to {target.value}",
                code="invalid_state",
            )
        changed = (
            Pi.update(state=target.value, updated_at=utcnow(), **fields)
            .where(Pi.id == pi.id, Pi.state == current.value)
            .execute()
        )
        if not changed:
            raise Conflict(f"Pi {pi.serial} changed state meanwhile", code="state_changed")
        message = TRANSITIONS[(current, target)] + (f": {reason}" if reason else "")
        self.record(pi, "state", message, pi.bake_id, **{"from": current.value, "to": target.value})
        return Pi.get_by_id(pi.id)

    # -- Pis -----------------------------------------------------------------------------

    def register_pi(
        self,
        serial: str,
        *,
        mac: str | None = None,
        model: str = "unknown",
        power_driver: str | None = None,
        power_settings: dict | None = None,
        labels: Sequence[str] = (),
        ip: str | None = None,
    ) -> Pi:
        serial = identifiers.serial(serial)
        driver = power_driver or self.settings.default_power_driver
        fields = self._checked_pi_fields(
            mac=mac, power_driver=driver, power_settings=power_settings or {}, labels=labels, ip=ip
        )
        if Pi.select().where(Pi.serial == serial).exists():
            raise Conflict(f"a Pi with serial {serial} is already registered")
        self._check_mac_free(fields.get("mac"), serial)
        with database.atomic():
            if fields.get("last_ip"):
                self._release_address(fields["last_ip"])
            pi = Pi.create(serial=serial, model=model, state=PiState.AVAILABLE.value, **fields)
        self.record(pi, "state", "registered", state=pi.state)
        return pi

    def update_pi(self, serial: str, **changes: Any) -> Pi:
        """Change a Pi's description. State changes go through ``set_pi_state``."""
        pi = self.get_pi(serial)
        if "power_driver" in changes and "power_settings" not in changes:
            changes["power_settings"] = pi.power_settings
        if "power_settings" in changes and "power_driver" not in changes:
            changes["power_driver"] = pi.power_driver
        fields = self._checked_pi_fields(**changes)
        self._check_mac_free(fields.get("mac"), pi.serial)
        if not fields:
            return pi
        with database.atomic():
            if fields.get("last_ip"):
                self._release_address(fields["last_ip"], keep=pi.id)
            Pi.update(updated_at=utcnow(), **fields).where(Pi.id == pi.id).execute()
        self.record(pi, "pi", "updated", fields=sorted(fields))
        if "last_ip" in fields and pi.bake_id:
            self.publish_exports()
        return Pi.get_by_id(pi.id)

    def set_pi_state(self, serial: str, state: PiState, reason: str = "") -> Pi:
        """An operator's move: accept a discovered Pi, mark one broken, repair it."""
        pi = self.get_pi(serial)
        if state is PiState.BROKEN:
            return self.transition(pi, PiState.BROKEN, reason, broken_reason=reason or "operator")
        if state is PiState.AVAILABLE and pi.state in (S.DISCOVERED.value, S.BROKEN.value):
            if self._live_bake_of(pi):
                raise Conflict(f"Pi {pi.serial} still has bake {pi.bake_id}; unbake it first")
            return self.transition(pi, PiState.AVAILABLE, reason, broken_reason="", bake_id=None)
        raise Conflict(
            f"Pi {pi.serial} is {pi.state}; an operator may only mark a Pi broken, "
            "or make a discovered or broken Pi available",
            code="invalid_state",
        )

    def delete_pi(self, serial: str) -> None:
        pi = self.get_pi(serial)
        if self._live_bake_of(pi) or pi.state in (S.PREPARING.value, S.UNBAKING.value):
            raise Conflict(f"Pi {pi.serial} has a live bake; unbake it first")
        pi.delete_instance(recursive=True)

    @staticmethod
    def _live_bake_of(pi: Pi) -> Bake | None:
        bake = Bake.get_or_none(Bake.id == pi.bake_id) if pi.bake_id else None
        return bake if bake is not None and bake.state in LIVE_BAKE_STATES else None

    def _checked_pi_fields(self, **changes: Any) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        try:
            if changes.get("mac") is not None:
                fields["mac"] = identifiers.mac(changes["mac"])
            if changes.get("ip") is not None:
                fields["last_ip"] = identifiers.ip(changes["ip"])
            if changes.get("labels") is not None:
                fields["labels"] = sorted({identifiers.label(x) for x in changes["labels"]})
            if changes.get("model") is not None:
                fields["model"] = changes["model"]
        except identifiers.InvalidIdentifier as exc:
            raise InvalidInput(str(exc)) from None
        if changes.get("power_driver") is not None:
            try:
                driver = driver_class(changes["power_driver"])
                fields["power_settings"] = driver.validate_settings(
                    changes.get("power_settings") or {}
                )
            except ValueError as exc:
                raise InvalidInput(f"power settings: {exc}") from None
            fields["power_driver"] = changes["power_driver"]
        return fields

    def _check_mac_free(self, mac: str | None, serial: str) -> None:
        if mac and Pi.select().where(Pi.mac == mac, Pi.serial != serial).exists():
            raise Conflict(f"MAC {mac} belongs to another Pi")

    # -- power ---------------------------------------------------------------------------

    def power_target(self, pi: Pi) -> PowerTarget:
        return PowerTarget(
            serial=pi.serial, mac=pi.mac, model=pi.model, settings=dict(pi.power_settings or {})
        )

    def power_pi(self, pi: Pi, action: str) -> PowerResult:
        """Run a power action and remember the Pi's power state."""
        result = self.power.run(pi.power_driver, self.power_target(pi), action)
        state = result.state if result.state in ("on", "off") else "unknown"
        Pi.update(power_state=state).where(Pi.id == pi.id).execute()
        return result

    def operator_power(self, serial: str, action: str) -> PowerResult:
        pi = self.get_pi(serial)
        try:
            return self.power_pi(pi, action)
        except PowerError as exc:
            raise PowerFailed(f"power {action} of Pi {pi.serial} failed: {exc.message}") from None

    # -- bakeforms -----------------------------------------------------------------------

    def import_bakeform(
        self, name: str, stream: BinaryIO, *, replace: bool = False, progress=None
    ) -> Bakeform:
        """Stream an upload into a staging dir, validate, extract, then swap it in.

        Nothing is visible (listed or cloned from) until the import has fully
        succeeded; a crash leaves only a staging dir, which ``recover`` removes."""
        try:
            identifiers.name(name, "bakeform name")
        except identifiers.InvalidIdentifier as exc:
            raise InvalidInput(str(exc)) from None
        if not replace and Bakeform.select().where(Bakeform.name == name).exists():
            raise Conflict(f"a bakeform named {name!r} exists; ask to replace it")
        staging = self.settings.path("bakeforms", f"{STAGING_PREFIX}{identifiers.new_id()}")
        staging.mkdir(parents=True)
        try:
            clone_method = roots.create_base(staging / "root")
            imported = images.import_image(
                stream,
                staging,
                max_bytes=self.settings.max_upload_mib * 1024 * 1024,
                progress=progress,
            )
            return self._install_bakeform(name, staging, imported, clone_method, replace)
        except images.UploadTooLarge as exc:
            raise TooLarge(str(exc)) from None
        except images.ImageError as exc:
            raise InvalidInput(str(exc), code=exc.code) from None
        finally:
            self._remove_tree(staging)

    def _install_bakeform(
        self,
        name: str,
        staging: Path,
        imported: images.ImportedImage,
        clone_method: str,
        replace: bool,
    ) -> Bakeform:
        final = self.bakeform_dir(name)
        trash = final.with_name(f"{TRASH_PREFIX}{identifiers.new_id()}")
        fields = dict(
            sha256=imported.sha256,
            size=imported.size,
            image_size=imported.image_size,
            compression=imported.compression,
            cmdline=imported.cmdline,
            clone_method=clone_method,
            created_at=utcnow(),
        )
        with self._lock("bakeforms"), write_transaction():
            existing = Bakeform.get_or_none(Bakeform.name == name)
            if existing and not replace:
                raise Conflict(f"a bakeform named {name!r} exists; ask to replace it")
            if final.exists():
                os.rename(final, trash)
            os.rename(staging, final)
            if existing:
                Bakeform.update(**fields).where(Bakeform.id == existing.id).execute()
            else:
                Bakeform.create(name=name, **fields)
        self._remove_tree(trash)
        self.record(None, "bakeform", f"bakeform {name} imported", sha256=imported.sha256)
        return Bakeform.get(Bakeform.name == name)

    def delete_bakeform(self, name: str) -> None:
        bakeform = self.get_bakeform(name)
        live = Bake.select().where(Bake.bakeform == bakeform, Bake.state.in_(LIVE_BAKE_STATES))
        if live.exists():
            raise Conflict(f"bakeform {name} is used by bake {live.first().id}")
        trash = self.bakeform_dir(name).with_name(f"{TRASH_PREFIX}{identifiers.new_id()}")
        with self._lock("bakeforms"), database.atomic():
            bakeform.delete_instance()
            if self.bakeform_dir(name).exists():
                os.rename(self.bakeform_dir(name), trash)
        self._remove_tree(trash)
        self.record(None, "bakeform", f"bakeform {name} deleted")

    # -- bakes ---------------------------------------------------------------------------

    def bake(
        self,
        bakeform_name: str,
        *,
        serial: str | None = None,
        labels: Sequence[str] = (),
        model: str | None = None,
        hostname: str | None = None,
        agent_settings: dict | None = None,
        metadata: dict | None = None,
        disk_ids: Sequence[str] = (),
        power_on: bool = True,
    ) -> Bake:
        """Put a bakeform on a free Pi and power it on; undo everything on failure.

        ``disk_ids`` are detached disks to attach before the Pi powers on (a BOSH
        ephemeral disk made beforehand, so its id can go into the agent settings).
        With ``power_on=False`` the bake is complete but the Pi stays off until
        ``power_bake``: a client can first write settings that name the bake or the Pi."""
        bakeform = self.get_bakeform(bakeform_name)
        if hostname is not None:
            try:
                identifiers.hostname(hostname)
            except identifiers.InvalidIdentifier as exc:
                raise InvalidInput(str(exc)) from None
        for disk_id in disk_ids:
            if self.get_disk(disk_id).bake_id:
                raise Conflict(f"disk {disk_id} is attached to another bake")
        bake = self._claim(bakeform, serial, labels, model, hostname, agent_settings, metadata)
        try:
            return self._prepare(bake, bakeform, disk_ids, power_on)
        except BaseException as exc:
            self._roll_back(bake, f"{type(exc).__name__}: {exc}")
            raise _as_user_error(exc) from None

    def _candidates(self, serial: str | None, labels: Sequence[str], model: str | None) -> list[Pi]:
        query = Pi.select().where(Pi.state == PiState.AVAILABLE.value)
        if serial:
            query = query.where(Pi.serial == identifiers.serial(serial))
        if model:
            query = query.where(Pi.model == model)
        wanted = set(labels)
        pis = [pi for pi in query if wanted <= set(pi.labels or [])]
        # Random order: concurrent bakes try different Pis first and rarely collide.
        random.shuffle(pis)
        return pis

    def _claim(self, bakeform, serial, labels, model, hostname, agent_settings, metadata) -> Bake:
        if serial:
            self.get_pi(serial)
        bake_id = identifiers.new_id()
        for pi in self._candidates(serial, labels, model):
            with database.atomic():
                claimed = (
                    Pi.update(state=PiState.PREPARING.value, bake_id=bake_id, updated_at=utcnow())
                    .where(Pi.id == pi.id, Pi.state == PiState.AVAILABLE.value)
                    .execute()
                )
                if not claimed:
                    continue
                bake = Bake.create(
                    id=bake_id,
                    pi=pi,
                    bakeform=bakeform,
                    bakeform_name=bakeform.name,
                    hostname=hostname or f"pi-{pi.serial}",
                    host_id=self.settings.host_id,
                    agent_settings=agent_settings,
                    metadata=metadata or {},
                )
            self.record(
                pi,
                "state",
                TRANSITIONS[(S.AVAILABLE, S.PREPARING)],
                bake_id,
                **{"from": "available", "to": "preparing", "bakeform": bakeform.name},
            )
            return bake
        wanted = f"Pi {serial}" if serial else "Pi"
        raise NoPiAvailable(
            f"no {wanted} available" + (f" with labels {list(labels)}" if labels else "")
        )

    def _prepare(
        self, bake: Bake, bakeform: Bakeform, disk_ids: Sequence[str], power_on: bool
    ) -> Bake:
        pi = bake.pi
        root = self.bake_root(bake.id)
        root.parent.mkdir(parents=True, exist_ok=True)
        source = self.bakeform_dir(bakeform.name)
        with self._lock("bakeforms", shared=True):  # root and boot of one import
            roots.clone_root(source / "root", root, bakeform.clone_method)
            roots.clone_boot(source / "boot", self.bake_boot(bake.id))
        self._step(bake, "cloned", "root cloned", method=bakeform.clone_method)
        roots.season_root(root, hostname=bake.hostname, resolv_conf=self.settings.resolv_conf)
        stemcell.install_disk_agent(root, self.settings.disks_list_path)
        self._step(bake, "seasoned", "root seasoned", hostname=bake.hostname)
        for disk_id in disk_ids:
            self._attach(Disk.get_by_id(disk_id), bake)
        self.write_bake_files(bake)
        self.publish_exports()
        self._step(bake, "exported", "root exported", ip=pi.last_ip)
        if power_on:
            self._step(bake, "powering_on", "powering on")
            self.power_pi(pi, "on")
            self._step(bake, "powered_on", "powered on")
        with database.atomic():
            Bake.update(state=BakeState.BAKED.value).where(Bake.id == bake.id).execute()
            self.transition(pi, PiState.BAKED, expect=PiState.PREPARING)
        return Bake.get_by_id(bake.id)

    def _step(self, bake: Bake, step: str, message: str, **data: Any) -> None:
        """Journal a bake step, so a rollback knows what to undo, and show it in the timeline."""
        Bake.update(step=step).where(Bake.id == bake.id).execute()
        bake.step = step
        self.record(bake.pi, "bake", message, bake.id, **data)

    def _roll_back(self, bake: Bake, reason: str) -> None:
        """Undo a bake that never became ``baked``: power, exports, disks, root, claim.

        Every step is attempted even if one before it fails (logged), so the Pi is
        always handed back; what could not be cleaned, ``recover`` cleans at start."""
        log.warning("rolling back bake %s: %s", bake.id, reason)
        pi = Pi.get_by_id(bake.pi_id)
        Bake.update(state=BakeState.FAILED.value, error=reason[:2000], finished_at=utcnow()).where(
            Bake.id == bake.id
        ).execute()
        steps = [
            lambda: self._release_disks(bake),
            self.publish_exports,
            lambda: self._remove_tree(self.bake_dir(bake.id)),
        ]
        if bake.step in ("powering_on", "powered_on"):
            steps.insert(0, lambda: self.power_pi(pi, "off"))
        for step in steps:
            _best_effort(step, f"rollback of bake {bake.id}")
        self._free_pi(pi, bake, PiState.AVAILABLE, reason[:200])

    def _free_pi(self, pi: Pi, bake: Bake, target: PiState, reason: str = "") -> None:
        """Detach the Pi from ``bake`` and move it to ``target`` (available or broken).

        Does nothing to a Pi that has moved on to another bake; a Pi an operator marked
        broken meanwhile is detached but stays broken."""
        released = Pi.update(bake_id=None).where(Pi.id == pi.id, Pi.bake_id == bake.id).execute()
        if not released:
            return
        pi = Pi.get_by_id(pi.id)
        with contextlib.suppress(Conflict):
            if pi.state == S.BAKED.value:
                pi = self.transition(pi, S.UNBAKING, reason)
            if allowed(PiState(pi.state), target) and pi.state != S.BROKEN.value:
                broken = reason if target is S.BROKEN else ""
                self.transition(pi, target, reason, broken_reason=broken)

    def unbake(self, bake_id: str) -> Bake:
        """Power off, unexport, delete the root and the bake's own disks, free the Pi."""
        bake = self.get_live_bake(bake_id)
        if bake.state != BakeState.BAKED.value:
            raise Conflict(f"bake {bake.id} is {bake.state}", code="bake_in_progress")
        with database.atomic():
            started = (
                Bake.update(state=BakeState.UNBAKING.value)
                .where(Bake.id == bake.id, Bake.state == BakeState.BAKED.value)
                .execute()
            )
            if not started:  # another request is unbaking it: only that one finishes it
                raise Conflict(f"bake {bake.id} is being unbaked", code="bake_in_progress")
            pi = Pi.get_by_id(bake.pi_id)
            if pi.state == PiState.BAKED.value and pi.bake_id == bake.id:
                self.transition(pi, PiState.UNBAKING)
        return self._finish_unbake(Bake.get_by_id(bake.id))

    def _finish_unbake(self, bake: Bake) -> Bake:
        """The steps of an unbake; the bake is ``unbaked`` only once they have all run
        (a failed step leaves it ``unbaking``, finished by ``recover`` at the next start)."""
        pi = Pi.get_by_id(bake.pi_id)
        power_failure = ""
        try:
            if pi.bake_id == bake.id:  # never switch off the Pi's next bake
                self.power_pi(pi, "off")
        except PowerError as exc:
            power_failure = f"power off failed during unbake: {exc.message}"
        self._release_disks(bake)
        self.publish_exports()  # exports only preparing and baked bakes
        self._remove_tree(self.bake_dir(bake.id))
        Bake.update(state=BakeState.UNBAKED.value, finished_at=utcnow()).where(
            Bake.id == bake.id
        ).execute()
        # A Pi we could not switch off may still run: keep it out of the fridge.
        target = PiState.BROKEN if power_failure else PiState.AVAILABLE
        self._free_pi(pi, bake, target, power_failure)
        return Bake.get_by_id(bake.id)

    def _release_disks(self, bake: Bake) -> None:
        """Delete the bake's ephemeral disks; detach (keep) the others."""
        for disk in Disk.select().where(Disk.bake == bake.id):
            if disk.ephemeral:
                disk.delete_instance()
                disks.delete_disk_image(self.settings, disk.id)
            else:
                Disk.update(bake=None).where(Disk.id == disk.id).execute()

    def power_bake(self, bake_id: str, action: str) -> PowerResult:
        """Switch the Pi of a live bake (start it, reboot it with ``cycle``)."""
        bake = self.get_live_bake(bake_id)
        if bake.state != BakeState.BAKED.value:
            raise Conflict(f"bake {bake.id} is {bake.state}", code="invalid_state")
        return self.operator_power(bake.pi.serial, action)

    def set_agent_settings(self, bake_id: str, agent_settings: dict) -> Bake:
        bake = self.get_live_bake(bake_id)
        Bake.update(agent_settings=agent_settings).where(Bake.id == bake.id).execute()
        bake = Bake.get_by_id(bake.id)
        self.write_bake_files(bake)
        return bake

    def write_bake_files(self, bake: Bake) -> None:
        """Write what the Pi reads from its own root: the agent settings (the BOSH
        agent's File settings source) and the list of attached disks (the disk
        agent). Written symlink-safely: the root came from an uploaded image."""
        root = self.bake_root(bake.id)
        if bake.agent_settings is not None:
            text = json.dumps(bake.agent_settings, indent=2, sort_keys=True) + "\n"
            roots.write_in_root(root, self.settings.agent_settings_path, text.encode(), mode=0o600)
        lines = [
            f"{disk.id} {self.settings.nfs_server}:{disks.disk_dir(self.settings, disk.id)}\n"
            for disk in Disk.select().where(Disk.bake == bake.id).order_by(Disk.created_at)
        ]
        roots.write_in_root(root, self.settings.disks_list_path, "".join(lines).encode())

    def agent_settings_for_address(self, ip: str) -> dict:
        """The agent settings of the live bake on the Pi at ``ip`` (the metadata service)."""
        try:
            pi = Pi.get_or_none(Pi.last_ip == identifiers.ip(ip))
        except identifiers.InvalidIdentifier:
            pi = None
        bake = Bake.get_or_none(Bake.id == pi.bake_id) if pi and pi.bake_id else None
        if bake is None or bake.state not in LIVE_BAKE_STATES or bake.agent_settings is None:
            raise NotFound(f"no agent settings for {ip}", code="agent_settings_not_found")
        return bake.agent_settings

    def set_bake_metadata(self, bake_id: str, metadata: dict) -> Bake:
        bake = self.get_live_bake(bake_id)
        Bake.update(metadata=metadata).where(Bake.id == bake.id).execute()
        return Bake.get_by_id(bake.id)

    # -- disks ---------------------------------------------------------------------------

    def create_disk(
        self,
        size_mib: int,
        *,
        bake_id: str | None = None,
        ephemeral: bool = False,
        metadata: dict | None = None,
    ) -> Disk:
        if not 1 <= size_mib <= self.settings.max_disk_mib:
            raise InvalidInput(f"size_mib must be between 1 and {self.settings.max_disk_mib}")
        bake = self.get_live_bake(bake_id) if bake_id else None
        disk_id = identifiers.new_id()
        disks.create_disk_image(self.settings, disk_id, size_mib)
        try:
            disk = Disk.create(
                id=disk_id,
                size_mib=size_mib,
                bake=bake,
                ephemeral=ephemeral,
                metadata=metadata or {},
            )
        except BaseException:
            disks.delete_disk_image(self.settings, disk_id)
            raise
        if bake:
            self.write_bake_files(bake)
            self.publish_exports()
        self.record(
            bake.pi if bake else None,
            "disk",
            f"disk {disk_id} created",
            bake.id if bake else None,
            size_mib=size_mib,
        )
        return disk

    def delete_disk(self, disk_id: str) -> None:
        disk = self.get_disk(disk_id)
        if disk.bake_id:
            raise Conflict(f"disk {disk.id} is attached to bake {disk.bake_id}; detach it first")
        deleted = Disk.delete().where(Disk.id == disk.id, Disk.bake.is_null()).execute()
        if not deleted:
            raise Conflict(f"disk {disk.id} was attached meanwhile")
        disks.delete_disk_image(self.settings, disk.id)

    def attach_disk(self, disk_id: str, bake_id: str) -> Disk:
        disk = self.get_disk(disk_id)
        bake = self.get_live_bake(bake_id)
        if disk.bake_id == bake.id:
            return disk
        self._attach(disk, bake)
        self.write_bake_files(bake)
        self.publish_exports()
        return Disk.get_by_id(disk.id)

    def _attach(self, disk: Disk, bake: Bake) -> None:
        attached = (
            Disk.update(bake=bake.id).where(Disk.id == disk.id, Disk.bake.is_null()).execute()
        )
        if not attached:
            raise Conflict(f"disk {disk.id} is attached to another bake")
        self.record(bake.pi, "disk", f"disk {disk.id} attached", bake.id)

    def detach_disk(self, disk_id: str) -> Disk:
        disk = self.get_disk(disk_id)
        if not disk.bake_id:
            return disk
        Disk.update(bake=None, ephemeral=False).where(Disk.id == disk.id).execute()
        bake = Bake.get_by_id(disk.bake_id)
        if bake.state in LIVE_BAKE_STATES:
            self.write_bake_files(bake)
        self.publish_exports()
        self.record(bake.pi, "disk", f"disk {disk.id} detached", bake.id)
        return Disk.get_by_id(disk.id)

    def set_disk_metadata(self, disk_id: str, metadata: dict) -> Disk:
        disk = self.get_disk(disk_id)
        Disk.update(metadata=metadata).where(Disk.id == disk.id).execute()
        return Disk.get_by_id(disk.id)

    def snapshot_disk(self, disk_id: str, metadata: dict | None = None) -> Snapshot:
        """A copy-on-write snapshot of a disk image (reflink filesystems only)."""
        disk = self.get_disk(disk_id)
        snapshot_id = identifiers.new_id()
        if not disks.snapshot_disk_image(self.settings, disk.id, snapshot_id):
            raise NotSupported(
                "snapshots need a data dir on a filesystem with reflinks (btrfs or xfs)"
            )
        try:
            return Snapshot.create(
                id=snapshot_id, disk_id=disk.id, size_mib=disk.size_mib, metadata=metadata or {}
            )
        except BaseException:
            disks.delete_snapshot_image(self.settings, snapshot_id)
            raise

    def get_snapshot(self, snapshot_id: str) -> Snapshot:
        found = identifiers.ID_RE.match(snapshot_id) and Snapshot.get_or_none(
            Snapshot.id == snapshot_id
        )
        if not found:
            raise NotFound(f"no snapshot {snapshot_id!r}", code="snapshot_not_found")
        return found

    def delete_snapshot(self, snapshot_id: str) -> None:
        snapshot = self.get_snapshot(snapshot_id)
        snapshot.delete_instance()
        disks.delete_snapshot_image(self.settings, snapshot.id)

    def resize_disk(self, disk_id: str, size_mib: int) -> Disk:
        disk = self.get_disk(disk_id)
        if size_mib < disk.size_mib:
            raise Conflict("disks can grow but not shrink", code="shrink_not_supported")
        if size_mib > self.settings.max_disk_mib:
            raise InvalidInput(f"size_mib must be at most {self.settings.max_disk_mib}")
        disks.resize_disk_image(self.settings, disk.id, size_mib)
        Disk.update(size_mib=size_mib).where(Disk.id == disk.id).execute()
        return Disk.get_by_id(disk.id)

    # -- exports -------------------------------------------------------------------------

    def desired_exports(self) -> list[exports.Export]:
        """What the NFS server should export now: live bakes' roots and their disks,
        each to the one address its Pi boots from. A Pi whose address is not yet
        known gets nothing (never a wildcard)."""
        live = (BakeState.PREPARING.value, BakeState.BAKED.value)
        result: list[exports.Export] = []
        bakes = (
            Bake.select(Bake, Pi).join(Pi).where(Bake.state.in_(live), Pi.last_ip.is_null(False))
        )
        for bake in bakes:
            result.append(exports.Export(self.bake_root(bake.id), bake.pi.last_ip, "root", bake.id))
            for disk in Disk.select().where(Disk.bake == bake.id):
                result.append(
                    exports.Export(
                        disks.disk_dir(self.settings, disk.id), bake.pi.last_ip, "disk", disk.id
                    )
                )
        return result

    def publish_exports(self) -> None:
        """Rewrite the exports from the database. The list is read under the same lock
        as it is written, so a slower writer never replaces a newer list with an older one."""
        with self._lock("exports-plan"):
            exports.publish(self.settings, self.desired_exports())

    # -- netboot -------------------------------------------------------------------------

    def boot_target(
        self, serial: str, ip: str, model: str | None = None
    ) -> bootfiles.BootTarget | None:
        """What the Pi asking for boot files from ``ip`` should boot, or None.

        A Pi never seen before is recorded (``discovered``, or ``available`` with
        ``auto_accept``). The address a Pi boots from becomes its address, and its
        exports follow it, before it is told where its root is, once the address is
        confirmed to be the Pi's (``address_is_the_pis``); a request from an address that
        is not gets nothing."""
        serial, ip = identifiers.serial(serial), identifiers.ip(ip)
        pi = Pi.get_or_none(Pi.serial == serial)
        if pi is None:
            self.discover_pi(serial, ip, model)
            return None
        if pi.last_ip != ip:
            if not self.address_is_the_pis(pi, ip):
                return None
            pi = self.pin_address(pi, ip)
        bake = Bake.get_or_none(Bake.id == pi.bake_id) if pi.bake_id else None
        live = (BakeState.PREPARING.value, BakeState.BAKED.value)
        if bake is None or bake.state not in live or pi.state == S.BROKEN.value:
            return None
        boot_dir = self.bake_boot(bake.id)
        cmdline = bootfiles.render_cmdline(
            images.read_cmdline(boot_dir), self.settings.nfs_server, self.bake_root(bake.id)
        )
        return bootfiles.BootTarget(
            serial=pi.serial, bake_id=bake.id, boot_dir=boot_dir, cmdline=cmdline
        )

    def discover_pi(self, serial: str, ip: str, model: str | None = None) -> Pi | None:
        """Record a Pi seen on the wire; a race with another request is harmless.

        It gets the address only if no other Pi has it: a request with a made-up serial
        from a baked Pi's address must not take that Pi's exports away."""
        state = S.AVAILABLE if self.settings.auto_accept else S.DISCOVERED
        if state is S.DISCOVERED and self._too_many_discovered(serial, ip):
            return None
        taken = Pi.select().where(Pi.last_ip == ip).exists()
        try:
            with database.atomic():
                pi = Pi.create(
                    serial=serial,
                    last_ip=None if taken else ip,
                    model=model or "unknown",
                    state=state.value,
                    power_driver="manual",
                )
        except pw.IntegrityError:
            return None
        self.record(pi, "state", f"discovered at {ip}", state=state.value, model=pi.model)
        return pi

    def _too_many_discovered(self, serial: str, ip: str) -> bool:
        waiting = Pi.select().where(Pi.state == S.DISCOVERED.value).count()
        if waiting < MAX_DISCOVERED:
            return False
        if self._first_in_a_while(("discovered", 0)):
            log.warning("not recording Pi %s at %s: %d Pis await acceptance", serial, ip, waiting)
        return True

    def address_is_the_pis(self, pi: Pi, ip: str) -> bool:
        """Whether a Pi may move to ``ip``: yes if its MAC is not registered (nothing to
        check against) or ``ip`` is a loopback address (the simulator's, this host's
        own); otherwise only if the kernel's neighbour table has ``ip`` at the Pi's MAC.
        Without this any host on the Pi LAN that knows a serial could send one TFTP
        request and have that Pi's root exported to itself. (One that also forges ARP
        with the Pi's MAC is not stopped: the kernel believes the sender of an ARP
        request; only a LAN kept to the Pis, or a switch inspecting ARP, stops that.) An
        address not resolved yet is refused too: our answer makes the kernel resolve it,
        and the Pi's next try (the bootloader retries) is confirmed."""
        if pi.mac is None or ipaddress.ip_address(ip).is_loopback:
            return True
        seen = neighbours.mac_of(ip)
        if seen == pi.mac:
            return True
        if self._first_in_a_while(("refused address", pi.id)):
            whose = f"MAC {seen}" if seen else "no known MAC yet"
            message = f"address {ip} not taken: it has {whose}, the Pi has {pi.mac}"
            self.record(pi, "boot", message, pi.bake_id, ip=ip, seen_mac=seen)
        return False

    def _first_in_a_while(self, what: tuple[str, int]) -> bool:
        """True at most once per ``QUIET_REPEATS`` seconds for ``what``: requests anyone
        on the Pi LAN can send must not flood the timeline or the log."""
        now = time.monotonic()
        if now - self._said.get(what, float("-inf")) < QUIET_REPEATS:
            return False
        self._said[what] = now
        return True

    def pin_address(self, pi: Pi, ip: str) -> Pi:
        """Make ``ip`` the Pi's address (DHCP may move a Pi) and re-export to it."""
        with database.atomic():
            self._release_address(ip, keep=pi.id)
            Pi.update(last_ip=ip, updated_at=utcnow()).where(Pi.id == pi.id).execute()
        self.record(pi, "boot", f"address is now {ip}", pi.bake_id, previous=pi.last_ip, ip=ip)
        if pi.bake_id:
            self.publish_exports()
        return Pi.get_by_id(pi.id)

    def _release_address(self, ip: str, keep: int | None = None) -> None:
        """An address belongs to one Pi: whoever had it before no longer does."""
        query = Pi.update(last_ip=None).where(Pi.last_ip == ip)
        if keep is not None:
            query = query.where(Pi.id != keep)
        query.execute()

    def turn_away(self, serial: str) -> None:
        """A Pi with no live bake is booting: switch it off, as the original bakery did."""
        pi = Pi.get_or_none(Pi.serial == identifiers.serial(serial))
        if pi is None or pi.state != S.AVAILABLE.value:
            return
        self.record(pi, "boot", "booting without a bake: powering off")
        try:
            self.power_pi(pi, "off")
        except PowerError as exc:
            log.warning("could not power off idle Pi %s: %s", pi.serial, exc.message)

    def record_boot(self, serial: str, message: str, **data: Any) -> None:
        """A boot-timeline event (TFTP file served, transfer failed, DHCP offer...)."""
        pi = Pi.get_or_none(Pi.serial == identifiers.serial(serial))
        if pi is not None:
            self.record(pi, "boot", message, pi.bake_id, **data)

    def record_dhcp(self, mac: str, message: str, **data: Any) -> None:
        """A DHCP event for the Pi with this MAC (dnsmasq's log, seen by ``serve``)."""
        pi = Pi.get_or_none(Pi.mac == identifiers.mac(mac))
        if pi is not None:
            self.record(pi, "dhcp", message, pi.bake_id, mac=pi.mac, **data)

    # -- crash recovery ------------------------------------------------------------------

    def recover(self) -> dict[str, int]:
        """Finish or undo what a crash interrupted, then remove stray files.

        Bakes this host was preparing are rolled back (the director or user retries);
        unbakes are finished (the user asked for them). Files no row owns are
        deleted. Exports are rewritten from the database."""
        mine = Bake.host_id == self.settings.host_id
        counts = {"rolled_back": 0, "unbaked": 0, "stray_paths": 0}
        for bake in Bake.select().where(mine, Bake.state == BakeState.PREPARING.value):
            if _best_effort(
                lambda b=bake: self._roll_back(b, "interrupted by a restart"),
                f"recovery of bake {bake.id}",
            ):
                counts["rolled_back"] += 1
        for bake in Bake.select().where(mine, Bake.state == BakeState.UNBAKING.value):
            if _best_effort(lambda b=bake: self._finish_unbake(b), f"recovery of bake {bake.id}"):
                counts["unbaked"] += 1
        for pi in Pi.select().where(Pi.bake_id.is_null(False)):
            if self._live_bake_of(pi) is None:
                dead = Bake.get_or_none(Bake.id == pi.bake_id) or Bake(id=pi.bake_id)
                self._free_pi(pi, dead, PiState.AVAILABLE, "its bake is gone")
        for pi in Pi.select().where(Pi.state == PiState.PREPARING.value, Pi.bake_id.is_null()):
            self.transition(pi, PiState.AVAILABLE, "claim without a bake")
        for bake in Bake.select().where(mine, Bake.state == BakeState.BAKED.value):
            _best_effort(lambda b=bake: self._give_boot_files(b), f"boot files of bake {bake.id}")
        for path in self._stray_paths():
            self._remove_tree(path)
            counts["stray_paths"] += 1
        self.publish_exports()
        return counts

    def _give_boot_files(self, bake: Bake) -> None:
        """Bakes made before bakes had boot files of their own get them (from their
        bakeform as it is now) the first time a release with them starts."""
        if self.bake_boot(bake.id).exists() or not self.bake_root(bake.id).exists():
            return
        with self._lock("bakeforms", shared=True):
            boot = self.bakeform_dir(bake.bakeform_name) / "boot"
            roots.clone_boot(boot, self.bake_boot(bake.id))

    def _stray_paths(self) -> Iterator[Path]:
        live_bakes = {b.id for b in Bake.select(Bake.id).where(Bake.state.in_(LIVE_BAKE_STATES))}
        bakes_dir = self.settings.path("bakes")
        if bakes_dir.is_dir():
            yield from (p for p in bakes_dir.iterdir() if p.name not in live_bakes)
        forms = {b.name for b in Bakeform.select(Bakeform.name)}
        forms_dir = self.settings.path("bakeforms")
        if forms_dir.is_dir():
            yield from (p for p in forms_dir.iterdir() if p.name not in forms)
        yield from disks.stray_dirs(
            disks.disks_dir(self.settings), {d.id for d in Disk.select(Disk.id)}
        )
        yield from disks.stray_dirs(
            self.settings.path("snapshots"), {s.id for s in Snapshot.select(Snapshot.id)}
        )

    def restore_power(self) -> None:
        """After a restart, bring queryable Pis back to the power state their state implies."""
        for pi in Pi.select().where(Pi.state.in_([S.BAKED.value, S.AVAILABLE.value])):
            if not driver_class(pi.power_driver).queryable:
                continue
            wanted = "on" if pi.state == S.BAKED.value else "off"
            try:
                if self.power_pi(pi, "status").state != wanted:
                    self.power_pi(pi, wanted)
            except PowerError as exc:
                log.warning("restoring power of Pi %s failed: %s", pi.serial, exc.message)

    # -- helpers -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _lock(self, name: str, *, shared: bool = False) -> Iterator[None]:
        """A cross-process lock (all workers and the TFTP server of this host); many
        ``shared`` holders at once, or one exclusive."""
        path = self.settings.path("locks", f"{name}.lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            yield

    @staticmethod
    def _remove_tree(path: Path) -> None:
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            roots.delete_tree(path)


def _as_user_error(exc: BaseException) -> BaseException:
    """What a failed bake step means to the user who asked for the bake."""
    if isinstance(exc, PowerError):
        return PowerFailed(f"bake failed: power on: {exc.message}")
    if isinstance(exc, roots.SeasoningError):
        return InvalidInput(f"bake failed: unsafe bakeform root: {exc}", code="unsafe_bakeform")
    if isinstance(exc, roots.RootError | exports.ExportError | OSError):
        return StorageFailed(f"bake failed: could not make the Pi's root: {exc}")
    return exc


def _best_effort(step: Callable[[], object], what: str) -> bool:
    """Run one cleanup step; a failure is logged, not raised, so the next step runs."""
    try:
        step()
    except Exception:
        log.exception("%s: a step failed; recovery at the next start will retry", what)
        return False
    return True
