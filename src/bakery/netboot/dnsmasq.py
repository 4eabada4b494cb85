"""Proxy DHCP for Pis: dnsmasq's configuration, and dnsmasq run as a supervised child.

A netbooting Pi needs a second DHCP answer besides its address: a proxy OFFER whose
option 43 carries the PXE boot menu entry "Raspberry Pi Boot" and whose option 54
names the TFTP server (pi-netboot §1.2). dnsmasq gives exactly that in proxy mode,
next to the site's own DHCP server, so Bakery renders its configuration rather than
speaking DHCP itself. ``bakery serve`` runs it as a child, restarts it when it dies,
and turns its log lines into ``dhcp`` events on each Pi's boot timeline.

Facts checked with dnsmasq 2.90 (network namespaces, see the tests):
- In proxy mode option 54 is always dnsmasq's own address on the Pi interface in the
  ``dhcp-range`` subnet (``dhcp-option=54`` does not override it), so bakery's TFTP
  server must listen on that address.
- A client whose MAC has no ``rpi`` tag still gets a proxy OFFER (with an empty
  menu) unless ``dhcp-ignore=tag:!rpi``; ignoring it leaves x86 PXE clients on the
  same segment to their own boot servers.
- ``dhcp-no-override`` only matters for ``dhcp-boot`` file/server fields, which a
  Pi proxy reply does not use, so it is not rendered.
- Pi 4 and Pi 5 bootloaders say their model in option 97: a type byte 0, then the
  FourCC "RPi4"/"RPi5" (pi-netboot §1.1). ``dhcp-match`` with hex bytes compares the
  option's start, so each model gets a tag, and ``log-dhcp`` logs a transaction's tags
  on the line after its reply's: the reply's event waits for it, and so the model reaches
  the Pi's ``dhcp`` event (and a Pi registered without one). Pi 3 ROMs send no model.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from dataclasses import dataclass, replace

from .. import fsutil, metrics
from ..config import Settings, interface_rule, ipv4_rule, oui_rule, reply_delay_rule
from ..supervisor import ChildSupervisor
from .bootfiles import BootSource

log = logging.getLogger(__name__)

#: The PXE menu text every Pi bootloader looks for in option 43 (pi-netboot §1.2).
BOOT_MENU_TEXT = "Raspberry Pi Boot"
#: The Pi 3B ROM (BCM2837A0) compares one length too many: it needs 3 trailing spaces.
#: Later bootloaders match a substring, so the padded text boots every model.
PI3B_PADDING = "   "


#: A transaction line of dnsmasq's DHCP log, e.g. (with ``log-dhcp``, which adds the xid)
#: ``dnsmasq-dhcp[7]: 2346026701 PXE(eth1) dc:a6:32:01:02:03 proxy`` or
#: ``dnsmasq-dhcp[7]: DHCPOFFER(eth1) 10.0.0.9 dc:a6:32:01:02:03``.
DHCP_LINE_RE = re.compile(
    r"^dnsmasq-dhcp\[\d+\]: (?:(?P<xid>\d+) )?"
    r"(?P<message>(?P<packet>[A-Z0-9]+)\((?P<interface>[^)\s]+)\) "
    r"(?:(?P<address>\d{1,3}(?:\.\d{1,3}){3}) )?"
    r"(?P<mac>[0-9a-f]{2}(?::[0-9a-f]{2}){5})(?: .*)?)$"
)
#: dnsmasq logs this once its sockets are bound and it answers.
STARTED_RE = re.compile(r"^dnsmasq\[\d+\]: started, version ")
#: ``log-dhcp``'s list of a request's tags: ``dnsmasq-dhcp[7]: 2346026701 tags: pi4, rpi, eth1``.
TAGS_LINE_RE = re.compile(r"^dnsmasq-dhcp\[\d+\]: (?P<xid>\d+) tags: (?P<tags>.*)$")
#: Option 97's first bytes from each model's bootloader, as the dnsmasq tag that marks
#: it and the model Bakery records (the names ``guess_model`` gives too).
MODEL_TAGS = {"pi4": ("00:52:50:69:34", "4B"), "pi5": ("00:52:50:69:35", "5")}


def render_config(
    settings: Settings,
    *,
    tftp_address: tuple[str, int] | None = None,
) -> str:
    """The dnsmasq configuration for proxy DHCP to the Pis on ``settings.pi_interface``.

    Every value is checked again here by the settings' own rules (``config``),
    whoever built ``settings``: a stray newline or ``#`` in a setting would otherwise
    become a dnsmasq directive. ValueError names the setting. ``tftp_address`` defaults
    to ``settings.tftp_address``; it is only used when ``proxy_range`` is empty, as the
    address whose subnet dnsmasq serves."""
    interface = interface_rule(settings.pi_interface)
    tftp_host, tftp_port = tftp_address or settings.tftp_address
    subnet = _proxy_subnet(settings.proxy_range, tftp_host)
    ouis = _ouis(settings.pi_ouis)
    delay = reply_delay_rule(settings.dhcp_reply_delay)
    menu = BOOT_MENU_TEXT + (PI3B_PADDING if settings.pi3b_padding else "")
    lines = [
        "# Proxy DHCP for Raspberry Pi netboot, rendered by bakery (pi-netboot §5.1).",
        f"# Pis take their TFTP server from option 54: this host's address on {interface}",
        f"# in the subnet of {subnet}; bakery's TFTP server ({tftp_host}:{tftp_port}) must",
        "# listen there, on port 69.",
        "port=0",
        f"interface={interface}",
        "bind-dynamic",
        f"dhcp-range={subnet},proxy",
        "leasefile-ro",
        *(f"dhcp-mac=set:rpi,{oui}:*:*:*" for oui in ouis),
        *(f"dhcp-match=set:{tag},97,{prefix}" for tag, (prefix, _) in MODEL_TAGS.items()),
        "dhcp-ignore=tag:!rpi",
        f'pxe-service=tag:rpi,0,"{menu}"',
        *([f"dhcp-reply-delay=tag:rpi,{delay}"] if delay else []),
        "log-dhcp",
    ]
    return "\n".join(lines) + "\n"


def _proxy_subnet(proxy_range: str, tftp_host: str) -> str:
    """An IPv4 address in the Pi subnet: ``proxy_range``, else the TFTP server's address."""
    if proxy_range:
        return ipv4_rule("proxy_range", proxy_range)
    address = ipv4_rule("tftp_bind", tftp_host)
    if ipaddress.IPv4Address(address).is_unspecified:
        raise ValueError(
            "setting 'proxy_range': needed when the TFTP server listens on every address"
        )
    return address


def _ouis(values: list[str]) -> list[str]:
    if not values:
        raise ValueError("setting 'pi_ouis': at least one MAC prefix is needed to spot Pis")
    return [oui_rule(oui) for oui in values]


@dataclass(frozen=True)
class DhcpLogEntry:
    """One DHCP transaction line of dnsmasq's log, about one client."""

    mac: str
    #: dnsmasq's words without the prefix, e.g. ``PXE(eth1) dc:a6:32:01:02:03 proxy``.
    message: str
    #: The packet type dnsmasq names: ``PXE`` for a proxy reply, ``DHCPOFFER``, ...
    packet: str
    interface: str
    address: str | None = None
    xid: int | None = None
    #: The model the bootloader named in option 97 (``MODEL_TAGS``), if it did.
    model: str | None = None

    @property
    def is_offer(self) -> bool:
        """Whether dnsmasq offered the client something: a proxy offer (``PXE(eth1) <mac>
        proxy``; ``proxy-ignored`` is none) or, outside proxy mode, a DHCPOFFER."""
        if self.packet == "PXE":
            return self.message.endswith(" proxy")
        return self.packet == "DHCPOFFER"

    @property
    def data(self) -> dict[str, str | int]:
        """What goes into the ``dhcp`` event beside the message."""
        fields = {"packet": self.packet, "interface": self.interface}
        optional = {"address": self.address, "xid": self.xid, "model": self.model}
        return fields | {key: value for key, value in optional.items() if value is not None}


def parse_dhcp_line(line: str) -> DhcpLogEntry | None:
    """The client and what dnsmasq did for it, or None for a line about no one client."""
    match = DHCP_LINE_RE.match(line.rstrip("\n"))
    if match is None:
        return None
    return DhcpLogEntry(
        mac=match["mac"],
        message=match["message"],
        packet=match["packet"],
        interface=match["interface"],
        address=match["address"],
        xid=int(match["xid"]) if match["xid"] else None,
    )


def parse_model_line(line: str) -> tuple[int, str] | None:
    """(transaction id, model) from a ``tags:`` line naming a model's tag, else None."""
    match = TAGS_LINE_RE.match(line.rstrip("\n"))
    if match is None:
        return None
    tags = {tag.strip() for tag in match["tags"].split(",")}
    models = [model for tag, (_, model) in MODEL_TAGS.items() if tag in tags]
    return (int(match["xid"]), models[0]) if len(models) == 1 else None


class DnsmasqSupervisor:
    """dnsmasq as a supervised child process, its DHCP lines recorded on the Pis.

    ``start()`` validates and writes the configuration (a ValueError reaches the
    caller), then runs ``dnsmasq --keep-in-foreground`` logging to a pipe under a
    ``ChildSupervisor`` (restarted with a bounded back-off when it exits).
    ``stop()`` terminates it. dnsmasq runs in the network namespace of the thread
    that called ``start()``."""

    def __init__(
        self,
        settings: Settings,
        source: BootSource,
        *,
        tftp_address: tuple[str, int] | None = None,
    ) -> None:
        self.settings = settings
        self.source = source
        self.tftp_address = tftp_address
        self.config_file = settings.path("dnsmasq", "dnsmasq.conf")
        self._serving_pid: int | None = None
        #: A transaction's reply line, held for the tags line that follows it.
        self._pending: DhcpLogEntry | None = None
        self.child = ChildSupervisor("dnsmasq", self.command, self._handle)

    @property
    def pid(self) -> int | None:
        """The pid of the dnsmasq that is up and answering, or None between runs."""
        process = self.child.process
        if process is None or process.poll() is not None or process.pid != self._serving_pid:
            return None
        return self._serving_pid

    @property
    def command(self) -> list[str]:
        return [
            self.settings.dnsmasq_binary,
            "--keep-in-foreground",
            f"--conf-file={self.config_file}",
            "--log-facility=-",
            "--pid-file=",
        ]

    def start(self) -> None:
        """Write the configuration and start supervising; returns at once."""
        text = render_config(self.settings, tftp_address=self.tftp_address)
        fsutil.write_atomically(self.config_file, text)
        self.child.start()

    def stop(self, timeout: float = 10.0) -> None:
        self.child.stop(timeout)
        self._flush_pending(None)

    def _handle(self, pid: int, line: str) -> None:
        if STARTED_RE.match(line):
            self._serving_pid = pid
        self._flush_pending(parse_model_line(line))
        entry = parse_dhcp_line(line)
        # log-dhcp's option dump is ten lines per offer: kept for debugging only.
        detail = entry is None and line.startswith("dnsmasq-dhcp[")
        log.log(logging.DEBUG if detail else logging.INFO, "%s", line)
        if entry is None:
            return
        if entry.xid is None:
            self._record(entry)
        else:
            self._pending = entry

    def _flush_pending(self, seen: tuple[int, str] | None) -> None:
        """Record the held reply, with the model of the tags line that came next if that
        line is its transaction's."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        if seen is not None and seen[0] == pending.xid:
            pending = replace(pending, model=seen[1])
        self._record(pending)

    def _record(self, entry: DhcpLogEntry) -> None:
        """A ``dhcp`` event on the Pi with this MAC (an offer is counted, whoever got it);
        a database error must not stop DHCP."""
        if entry.is_offer:
            metrics.dhcp_offered()
        try:
            self.source.record_dhcp(entry.mac, entry.message, entry.data)
        except Exception:
            log.exception("could not record DHCP event for %s", entry.mac)
