"""What a booting Pi is served, for the netboot servers: the fleet's side of
``netboot.bootfiles.BootSource``. The TFTP server and dnsmasq's supervisor ask it what to
serve a serial and tell it what happened; they never see the database themselves.

Each method runs on the calling thread's own database connection, opened on first use and
kept (opening one per call cost more than most calls); a call that fails drops it, so a
broken connection is not reused."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import peewee as pw

from .. import identifiers, images, neighbours
from ..config import Settings
from ..models import (
    UNKNOWN_MODEL,
    Bake,
    Pi,
    PiState,
    connect,
    create_schema,
    database,
    utcnow,
)
from ..netboot import bootfiles
from ..power import PowerError
from . import boots, console, events, hosts
from .context import FleetContext
from .exports import publish_exports
from .pis import release_address
from .power import power_pi
from .states import BOOTABLE_BAKE_STATES

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Pis left ``discovered`` (waiting for an operator) beyond which new serials are only
#: logged: far more than a rack holds, yet a host on the Pi LAN sending requests with
#: made-up serials cannot grow the fleet table without end.
MAX_DISCOVERED = 1024


class FleetBootSource:
    """The fleet as the netboot servers see it (implements ``bootfiles.BootSource``)."""

    def __init__(self, ctx: FleetContext) -> None:
        self.ctx = ctx

    @classmethod
    def open(cls, settings: Settings) -> FleetBootSource:
        """A boot source for a netboot process of its own: binds the database first."""
        connect(settings.database)
        create_schema()
        return cls(FleetContext.create(settings))

    def boot_target(
        self, serial: str, ip: str, model: str | None = None
    ) -> bootfiles.BootTarget | None:
        return self._on_connection(boot_target, self.ctx, serial, ip, model)

    def turn_away(self, serial: str) -> None:
        self._on_connection(turn_away, self.ctx, serial)

    def record_boot(self, serial: str, message: str, data: dict[str, Any]) -> None:
        self._on_connection(record_boot, serial, message, data)

    def record_dhcp(self, mac: str, message: str, data: dict[str, Any]) -> None:
        self._on_connection(record_dhcp, mac, message, data)

    def check_stalled(self) -> int:
        return self._on_connection(boots.check_stalled, self.ctx)

    def record_console(self, ip: str, lines: list[str]) -> bool:
        return self._on_connection(console.record_lines, self.ctx, ip, lines)

    def close(self) -> None:
        """Release the calling thread's connection."""
        if not database.is_closed():
            database.close()

    @staticmethod
    def _on_connection(call: Callable[..., T], *args: Any) -> T:
        database.connect(reuse_if_open=True)
        try:
            return call(*args)
        except Exception:
            database.close()
            raise


def boot_target(
    ctx: FleetContext, serial: str, ip: str, model: str | None = None
) -> bootfiles.BootTarget | None:
    """What the Pi asking for boot files from ``ip`` should boot, or None.

    A Pi never seen before is recorded (``discovered``, or ``available`` with
    ``auto_accept``). The address a Pi boots from becomes its address, and its exports
    follow it, before it is told where its root is, once the address is confirmed to be
    the Pi's (``address_is_the_pis``); a request from an address that is not gets
    nothing."""
    serial, ip = identifiers.serial(serial), identifiers.ip(ip)
    pi = Pi.get_or_none(Pi.serial == serial)
    if pi is None:
        discover_pi(ctx, serial, ip, model)
        return None
    if not hosts.adopt(ctx, pi):
        return None  # another host's Pi: its TFTP serves it
    if pi.last_ip != ip:
        if not address_is_the_pis(ctx, pi, ip):
            return None
        pi = pin_address(ctx, pi, ip)
    bake = Bake.get_or_none(Bake.id == pi.bake_id) if pi.bake_id else None
    if bake is None or bake.state not in BOOTABLE_BAKE_STATES or pi.state == PiState.BROKEN:
        return None
    boot_dir = ctx.bake_boot(bake.id)
    cmdline = bootfiles.render_cmdline(
        images.read_cmdline(boot_dir),
        ctx.settings.nfs_server,
        ctx.bake_root(bake.id),
        ctx.settings.nfs_mount_port,
    )
    http_dir = ctx.bake_dir(bake.id) / "http" if bake.boot_protocol == "http" else None
    return bootfiles.BootTarget(
        serial=pi.serial, bake_id=bake.id, boot_dir=boot_dir, cmdline=cmdline, http_dir=http_dir
    )


def discover_pi(ctx: FleetContext, serial: str, ip: str, model: str | None = None) -> Pi | None:
    """Record a Pi seen on the wire; a race with another request is harmless.

    It gets the address only if no other Pi has it: a request with a made-up serial from
    a baked Pi's address must not take that Pi's exports away."""
    state = PiState.AVAILABLE if ctx.settings.auto_accept else PiState.DISCOVERED
    if state is PiState.DISCOVERED and _too_many_discovered(ctx, serial, ip):
        return None
    taken = Pi.select().where(Pi.last_ip == ip).exists()
    try:
        with database.atomic():
            pi = Pi.create(
                serial=serial,
                last_ip=None if taken else ip,
                model=model or UNKNOWN_MODEL,
                state=state.value,
                power_driver="manual",
                host=ctx.settings.host_id,  # the host that saw it first
            )
            events.record(pi, "state", f"discovered at {ip}", state=state.value, model=pi.model)
    except pw.IntegrityError:
        return None
    return pi


def _too_many_discovered(ctx: FleetContext, serial: str, ip: str) -> bool:
    waiting = Pi.select().where(Pi.state == PiState.DISCOVERED.value).count()
    if waiting < MAX_DISCOVERED:
        return False
    if ctx.first_in_a_while(("discovered", 0)):
        log.warning("not recording Pi %s at %s: %d Pis await acceptance", serial, ip, waiting)
    return True


def address_is_the_pis(ctx: FleetContext, pi: Pi, ip: str) -> bool:
    """Whether a Pi may move to ``ip``: yes if its MAC is not registered (nothing to check
    against), or ``ip`` is a loopback address and the settings trust those (the
    simulator's Pis; any local process can send from one); otherwise only if the kernel's
    neighbour table has ``ip`` at the Pi's MAC. Without this any host
    on the Pi LAN that knows a serial could send one TFTP request and have that Pi's root
    exported to itself. (One that also forges ARP with the Pi's MAC is not stopped: the
    kernel believes the sender of an ARP request; only a LAN kept to the Pis, or a switch
    inspecting ARP, stops that.) An address not resolved yet is refused too: our answer
    makes the kernel resolve it, and the Pi's next try (the bootloader retries) is
    confirmed."""
    if pi.mac is None or (ctx.settings.trust_loopback and ipaddress.ip_address(ip).is_loopback):
        return True
    seen = neighbours.mac_of(ip)
    if seen == pi.mac:
        return True
    if ctx.first_in_a_while(("refused address", pi.id)):
        whose = f"MAC {seen}" if seen else "no known MAC yet"
        message = f"address {ip} not taken: it has {whose}, the Pi has {pi.mac}"
        events.record(pi, "boot", message, pi.bake_id, ip=ip, seen_mac=seen)
    return False


def pin_address(ctx: FleetContext, pi: Pi, ip: str) -> Pi:
    """Make ``ip`` the Pi's address (DHCP may move a Pi) and re-export to it: an event on
    its timeline says from where to where, so an operator sees every move of its root."""
    with database.atomic():
        release_address(ip, keep=pi.id)
        Pi.update(last_ip=ip, updated_at=utcnow()).where(Pi.id == pi.id).execute()
        moved = f"address changed from {pi.last_ip or 'none'} to {ip}"
        events.record(pi, "address", moved, pi.bake_id, previous=pi.last_ip, ip=ip)
    if pi.bake_id:
        publish_exports(ctx)
    return Pi.get_by_id(pi.id)


def turn_away(ctx: FleetContext, serial: str) -> None:
    """A Pi with no live bake is booting: switch it off, as the original bakery did."""
    pi = Pi.get_or_none(Pi.serial == identifiers.serial(serial))
    if pi is None or pi.state != PiState.AVAILABLE.value:
        return
    events.record(pi, "boot", "booting without a bake: powering off")
    try:
        power_pi(ctx, pi, "off")
    except PowerError as exc:
        log.warning("could not power off idle Pi %s: %s", pi.serial, exc.message)


def record_boot(serial: str, message: str, data: dict[str, Any]) -> None:
    """A boot-timeline event (TFTP file served, transfer failed...)."""
    pi = Pi.get_or_none(Pi.serial == identifiers.serial(serial))
    if pi is not None:
        events.record(pi, "boot", message, pi.bake_id, **data)


def record_dhcp(mac: str, message: str, data: dict[str, Any]) -> None:
    """A DHCP event for the Pi with this MAC (dnsmasq's log); the model its bootloader
    named becomes the model of a Pi registered without one."""
    pi = Pi.get_or_none(Pi.mac == identifiers.mac(mac))
    if pi is None:
        return
    events.record(pi, "dhcp", message, pi.bake_id, mac=pi.mac, **data)
    if data.get("model") and pi.model == UNKNOWN_MODEL:
        Pi.update(model=data["model"]).where(Pi.id == pi.id, Pi.model == UNKNOWN_MODEL).execute()
