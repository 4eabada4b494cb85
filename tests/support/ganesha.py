"""A real nfs-ganesha for tests (the server itself lives in ``bakery.sim.ganesha``), and
real NFS clients to read it back.

nfs-ganesha is a userspace NFS server, so tests can serve exports on a machine whose
kernel has no NFS server. It runs NFSv4 only: v3 needs rpcbind, and a test must not
touch the host's portmapper. The server reads the exports file Bakery writes through
``%include``, exactly as a production main config does.

libnfs' ``nfs-cat``/``nfs-ls`` cannot choose their source address, and an export is
granted to one client address. So a client with its own address lives in a network
namespace joined to the host by a veth pair (``client_namespace``); the NFS server
binds to the host side of such a pair.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from bakery.sim.ganesha import GANESHA
from bakery.sim.network import VethEnd, add_namespace, add_veth, delete_namespace, free_subnet

NFS_TOOLS = ("nfs-cat", "nfs-ls")
NFS_TIMEOUT = 30.0
#: Client namespaces take a random /30 out of this block (parallel test runs rarely meet).
NAMESPACE_POOL = ipaddress.ip_network("10.213.0.0/16")

T = TypeVar("T")


#: What these helpers run (for ``pytest.mark.tools``).
NFS_LAB_TOOLS = (GANESHA, *NFS_TOOLS, "ip")


@dataclass(frozen=True)
class ClientNamespace:
    """A network namespace whose only way out is a veth pair to the host."""

    name: str
    host_link: str
    host_ip: str
    client_ip: str


@contextmanager
def client_namespace() -> Iterator[ClientNamespace]:
    """A client with its own address: the host side and the namespace side share a free /30.

    The namespace's default route points at the host, so it can reach a server bound to
    any host address (the host delivers locally whatever interface a packet came in on).
    """
    suffix = uuid.uuid4().hex[:8]
    host_ip, client_ip = (str(a) for a in free_subnet(NAMESPACE_POOL, 30).hosts())
    namespace = ClientNamespace(f"bakery-nfs-{suffix}", f"bkn{suffix}", host_ip, client_ip)
    add_namespace(namespace.name)
    try:
        add_veth(
            VethEnd(namespace.host_link, address=f"{host_ip}/30"),
            VethEnd(f"bkc{suffix}", namespace.name, address=f"{client_ip}/30"),
        )
        _ip("-n", namespace.name, "route", "add", "default", "via", host_ip)
        yield namespace
    finally:
        delete_namespace(namespace.name)


def _addresses(namespace: str | None = None) -> list[str]:
    prefix = ["-n", namespace] if namespace else []
    links = json.loads(_ip(*prefix, "-j", "addr", "show").stdout or "[]")
    return [info["local"] for link in links for info in link.get("addr_info", [])]


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True)


def nfs_cat(
    url_path: str, port: int, source_ip: str, server: str = "127.0.0.1"
) -> subprocess.CompletedProcess[str]:
    """``nfs-cat`` of ``url_path`` over NFSv4, sent from ``source_ip``.

    ``source_ip`` is either the server's own address (the host talking to itself) or
    the address of a network namespace (see ``client_namespace``)."""
    return _nfs_tool("nfs-cat", url_path, port, source_ip, server)


def nfs_ls(
    url_path: str, port: int, source_ip: str, server: str = "127.0.0.1"
) -> subprocess.CompletedProcess[str]:
    """``nfs-ls`` of the directory ``url_path``, like ``nfs_cat``."""
    return _nfs_tool("nfs-ls", url_path, port, source_ip, server)


def _nfs_tool(
    tool: str, url_path: str, port: int, source_ip: str, server: str
) -> subprocess.CompletedProcess[str]:
    if not url_path.startswith("/"):
        raise ValueError(f"NFS path {url_path!r} must be absolute")
    argv = [tool, f"nfs://{server}{url_path}?nfsport={port}&version=4"]
    if source_ip != server:
        argv = ["ip", "netns", "exec", _namespace_holding(source_ip), *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=NFS_TIMEOUT, check=False)


def _namespace_holding(address: str) -> str:
    namespaces = json.loads(_ip("-j", "netns", "list").stdout or "[]")
    for namespace in namespaces:
        if address in _addresses(namespace["name"]):
            return namespace["name"]
    raise ValueError(f"no network namespace holds source address {address}")
