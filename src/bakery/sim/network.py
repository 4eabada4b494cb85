"""Where simulated Pis live on the network: two modes.

- ``loopback`` (no root): each Pi sends from its own ``127.66.x.y`` address, so the
  TFTP server sees one address per Pi and pins each Pi's exports to it. There is no
  DHCP step (the Pi is told its TFTP server, as the EEPROM's ``TFTP_IP`` does) and no
  NFS step: libnfs cannot choose its source address, so a read would come from
  127.0.0.1, which no per-Pi export names; the Pi reports the step skipped.
- ``netns`` (root): a bridge holding the server's address (where dnsmasq, Bakery's
  TFTP server and nfs-ganesha listen) and, per Pi, a network namespace joined to it
  by a veth pair with the Pi's MAC and address. The Pi's DHCP broadcast reaches the
  real dnsmasq, and its NFS reads come from its own address. The address a real Pi
  gets from the site's DHCP server is configured statically here; the proxy offer
  still has to arrive before the Pi goes on.

A boot runs in a thread that entered the Pi's namespace (``enter``): the sockets it
makes and the processes it starts (``nfs-cat``) live there.
"""

from __future__ import annotations

import ctypes
import ipaddress
import json
import os
import random
import shutil
import signal
import subprocess
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from .models import SimPi

T = TypeVar("T")

#: From <sched.h>; ``os.CLONE_NEWNET`` only exists from Python 3.12.
CLONE_NEWNET = 0x40000000
LOOPBACK_BLOCK = ipaddress.IPv4Network("127.66.0.0/16")
#: Sites pick a free /16 of this block (parallel sites on one host do not meet).
SUBNET_POOL = ipaddress.IPv4Network("10.64.0.0/10")
#: NFS port in netns mode: the port an ``nfsroot=server:path`` kernel mount uses.
NFS_PORT = 2049
#: Why a loopback Pi cannot read its root (shown in its timeline and status).
LOOPBACK_NFS_REASON = (
    "loopback mode: libnfs cannot send from the Pi's own address, which is the only "
    "one its export allows (use netns mode, as root, for the NFS step)"
)


@dataclass(frozen=True)
class Link:
    """What one Pi's network gives its bootloader."""

    #: The source address of everything the Pi sends.
    address: str
    #: Where the DHCP DISCOVER goes out; None: no DHCP step.
    interface: str | None
    #: A fixed TFTP server (the EEPROM's ``TFTP_IP``); None: option 54 of the proxy offer.
    tftp_server: tuple[str, int] | None
    nfs_port: int = NFS_PORT
    #: Non-empty when the NFS root cannot be read in this mode: the reason.
    nfs_skipped: str = ""


class Network:
    """The part both modes share: running a callable as one Pi."""

    mode = ""

    def addresses(self, count: int) -> list[str]:
        raise NotImplementedError

    def attach(self, pi: SimPi) -> None:
        """Give ``pi`` its place on the network (before it is powered on)."""

    def link(self, pi: SimPi) -> Link:
        raise NotImplementedError

    def enter(self, pi: SimPi) -> None:
        """Move the calling thread onto ``pi``'s network."""

    def namespace(self, pi: SimPi) -> str | None:
        """The network namespace of ``pi``, where it has one of its own."""
        return None

    def call(self, pi: SimPi, func: Callable[..., T], *args: Any) -> T:
        """``func(*args)`` run from ``pi``'s network, in a thread of its own."""
        return call_in_thread(lambda: self.enter(pi), func, *args)

    def close(self) -> None:
        """Remove whatever the network made."""


class LoopbackNetwork(Network):
    mode = "loopback"

    def __init__(self, tftp_server: tuple[str, int]) -> None:
        self.tftp_server = tftp_server

    def addresses(self, count: int) -> list[str]:
        hosts = LOOPBACK_BLOCK.hosts()
        return [str(next(hosts)) for _ in range(count)]

    def link(self, pi: SimPi) -> Link:
        return Link(pi.address, None, self.tftp_server, nfs_skipped=LOOPBACK_NFS_REASON)


class NetnsNetwork(Network):
    """A bridge and one namespace per Pi; ``open()`` makes the bridge, ``close()``
    kills what runs in the namespaces and deletes them and the bridge."""

    mode = "netns"

    def __init__(self, subnet: str | ipaddress.IPv4Network, nfs_port: int = NFS_PORT) -> None:
        self.subnet = ipaddress.ip_network(subnet)
        self.server_ip = str(next(self.subnet.hosts()))
        self.nfs_port = nfs_port
        self.tag = uuid.uuid4().hex[:6]
        self.bridge = f"bkr-br{self.tag}"
        self.namespaces: dict[str, str] = {}

    @property
    def proxy_range(self) -> str:
        """The network address dnsmasq's ``dhcp-range=<net>,proxy`` names."""
        return str(self.subnet.network_address)

    def open(self) -> NetnsNetwork:
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.server_ip}/{self.subnet.prefixlen}", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        return self

    def addresses(self, count: int) -> list[str]:
        """Pis start at the second /24 of the subnet (the first is the server's), and
        skip addresses ending in .0 or .255, which look wrong to people."""
        hosts = (
            h
            for h in self.subnet.hosts()
            if int(h) - int(self.subnet[0]) > 255 and int(h) & 0xFF not in (0, 255)
        )
        return [str(next(hosts)) for _ in range(count)]

    def attach(self, pi: SimPi) -> None:
        namespace = f"bkr-{self.tag}-{pi.serial}"
        host_end = f"bkv{self.tag}{len(self.namespaces):05x}"[:15]
        add_namespace(namespace)
        self.namespaces[pi.serial] = namespace
        address = f"{pi.address}/{self.subnet.prefixlen}"
        add_veth(
            VethEnd(host_end, bridge=self.bridge),
            VethEnd("eth0", namespace, address=address, mac=pi.mac),
        )

    def link(self, pi: SimPi) -> Link:
        return Link(pi.address, "eth0", None, self.nfs_port)

    def enter(self, pi: SimPi) -> None:
        enter_namespace(self.namespaces[pi.serial])

    def namespace(self, pi: SimPi) -> str | None:
        return self.namespaces[pi.serial]

    def close(self) -> None:
        for namespace in self.namespaces.values():
            delete_namespace(namespace)
        self.namespaces.clear()
        _ip("link", "del", self.bridge, check=False)


def free_subnet(
    pool: ipaddress.IPv4Network = SUBNET_POOL, prefix: int = 16
) -> ipaddress.IPv4Network:
    """A subnet of ``pool`` holding none of this host's addresses (parallel sites and
    test runs on one host rarely meet)."""
    listed = json.loads(_ip("-j", "addr", "show").stdout or "[]")
    used = [
        ipaddress.ip_address(info["local"])
        for link in listed
        for info in link.get("addr_info", [])
        if info.get("family") == "inet"
    ]
    candidates = list(pool.subnets(new_prefix=prefix))
    random.shuffle(candidates)
    for subnet in candidates:
        if not any(address in subnet for address in used):
            return subnet
    raise RuntimeError(f"no free /{prefix} left in {pool}")


# -- namespaces and veth pairs: the one builder the simulator and the tests use ------------


@dataclass(frozen=True)
class VethEnd:
    """One end of a veth pair: its interface, the namespace it lives in (None: the
    host's), and optionally its ``address/prefix``, its MAC and a bridge it joins."""

    interface: str
    namespace: str | None = None
    address: str | None = None
    mac: str | None = None
    bridge: str | None = None


def add_namespace(name: str) -> None:
    _ip("netns", "add", name)


def delete_namespace(name: str) -> None:
    """Kill every process still inside, then delete it (and the veth ends in it)."""
    _kill_inside(name)
    _ip("netns", "del", name, check=False)


def add_veth(first: VethEnd, second: VethEnd) -> None:
    """A veth pair between ``first`` and ``second``, both configured and up (and the
    loopback of each namespace they are in). The pair is made inside ``first``'s
    namespace with the peer sent straight to ``second``'s: the host never sees a name it
    does not keep, so parallel runs cannot collide on interface names."""
    peer_namespace = ["netns", second.namespace] if second.namespace else []
    _ip(
        *_inside(first.namespace),
        *("link", "add", first.interface, "type", "veth"),
        *("peer", "name", second.interface, *peer_namespace),
    )
    for end in (first, second):
        _configure(end)


def _configure(end: VethEnd) -> None:
    inside = _inside(end.namespace)
    link = (*inside, "link", "set", "dev", end.interface)
    if end.mac:
        _ip(*link, "address", end.mac)
    if end.address:
        _ip(*inside, "addr", "add", end.address, "dev", end.interface)
    if end.bridge:
        _ip(*link, "master", end.bridge)
    _ip(*link, "up")
    if end.namespace:
        _ip(*inside, "link", "set", "dev", "lo", "up")


def _inside(namespace: str | None) -> tuple[str, ...]:
    return ("-n", namespace) if namespace else ()


#: What netns mode runs: namespaces and veth pairs, proxy DHCP, the NFS server, the Pi's reads.
NETNS_TOOLS = ("ip", "dnsmasq", "ganesha.nfsd", "nfs-cat")


def missing_tools(mode: str) -> list[str]:
    """What this machine lacks for ``mode`` (netns also needs root)."""
    if mode != "netns":
        return []
    tools = [tool for tool in NETNS_TOOLS if not shutil.which(tool)]
    return tools + ([] if os.geteuid() == 0 else ["root"])


def _kill_inside(namespace: str) -> None:
    listed = _ip("netns", "pids", namespace, check=False)
    for pid in listed.stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def enter_namespace(name: str) -> None:
    """Move the calling thread into the network namespace ``name`` (``ip netns``)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns into {name}: {os.strerror(errno)}")
    finally:
        os.close(fd)


def call_in_thread(enter: Callable[[], None], func: Callable[..., T], *args: Any) -> T:
    """``func(*args)`` in a new thread that first calls ``enter`` (e.g. joins a network
    namespace, which only that thread then sees); its result, or its exception, here."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            enter()
            outcome["value"] = func(*args)
        except BaseException as exc:  # handed to the calling thread below
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return cast(T, outcome["value"])
