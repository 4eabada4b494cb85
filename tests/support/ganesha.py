"""A real nfs-ganesha for tests, and real NFS clients to read it back.

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
import random
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

GANESHA = "ganesha.nfsd"
NFS_TOOLS = ("nfs-cat", "nfs-ls")
NFS_TIMEOUT = 30.0
#: Client namespaces take a random /30 out of this block (parallel test runs rarely meet).
NAMESPACE_POOL = ipaddress.ip_network("10.213.0.0/16")

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float, what: str) -> T:
    """Poll ``predicate`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def missing_tools() -> list[str]:
    """What this machine lacks to run these helpers (for pytest skip messages)."""
    return [tool for tool in (GANESHA, *NFS_TOOLS, "ip") if shutil.which(tool) is None]


@dataclass
class Ganesha:
    """One nfs-ganesha process with its config, pid file, log and recovery dir in ``workdir``."""

    workdir: Path
    exports_file: Path
    bind: str = "127.0.0.1"
    port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def config_file(self) -> Path:
        return self.workdir / "ganesha.conf"

    @property
    def pid_file(self) -> Path:
        return self.workdir / "ganesha.pid"

    @property
    def log_file(self) -> Path:
        return self.workdir / "ganesha.log"

    def config_text(self) -> str:
        return (
            "NFS_CORE_PARAM {\n"
            f"    NFS_Port = {self.port};\n"
            f"    Bind_addr = {self.bind};\n"
            "    Protocols = 4;\n"
            "    Enable_NLM = false;\n"
            "    Enable_RQUOTA = false;\n"
            "}\n"
            "NFSV4 {\n"
            "    Graceless = true;\n"
            f'    RecoveryRoot = "{self.workdir / "recovery"}";\n'
            "}\n"
            f'%include "{self.exports_file}"\n'
        )

    def start(self, timeout: float = 30.0) -> None:
        """Start in the foreground and return once the NFS port accepts connections."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.exports_file.exists():
            self.exports_file.parent.mkdir(parents=True, exist_ok=True)
            self.exports_file.write_text("# no exports yet\n")
        self.port = self.port or free_port(self.bind)
        self.config_file.write_text(self.config_text())
        with open(self.workdir / "ganesha.stdout", "wb") as output:
            self.process = subprocess.Popen(
                [GANESHA, "-F", "-f", str(self.config_file), "-L", str(self.log_file)]
                + ["-p", str(self.pid_file), "-N", "NIV_EVENT"],
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until(self._serving, timeout, f"nfs-ganesha on {self.bind}:{self.port}")

    def _serving(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError(f"nfs-ganesha exited early:\n{self.log()}")
        try:
            socket.create_connection((self.bind, self.port), timeout=1).close()
        except OSError:
            return False
        return self.pid_file.exists()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log(self) -> str:
        parts = [self.workdir / "ganesha.stdout", self.log_file]
        return "\n".join(path.read_text(errors="replace") for path in parts if path.exists())

    def reloads(self) -> int:
        """How many SIGHUP export reloads ganesha has finished."""
        return self.log().count("Reread exports complete")


@contextmanager
def running_ganesha(
    workdir: Path, exports_file: Path, bind: str = "127.0.0.1", port: int = 0
) -> Iterator[Ganesha]:
    """A started nfs-ganesha that is always stopped; its log is printed if the body fails."""
    server = Ganesha(workdir, exports_file, bind, port)
    try:
        server.start()
        yield server
    except BaseException:
        print(f"--- nfs-ganesha log ({server.log_file}) ---\n{server.log()}")
        raise
    finally:
        server.stop()


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
    network = _free_network()
    host_ip, client_ip = (str(address) for address in network.hosts())
    namespace = ClientNamespace(f"bakery-nfs-{suffix}", f"bkn{suffix}", host_ip, client_ip)
    peer = f"bkc{suffix}"
    _ip("netns", "add", namespace.name)
    try:
        _ip("link", "add", namespace.host_link, "type", "veth", "peer", "name", peer)
        try:
            _ip("link", "set", peer, "netns", namespace.name)
            _ip("addr", "add", f"{host_ip}/30", "dev", namespace.host_link)
            _ip("link", "set", namespace.host_link, "up")
            _ip("-n", namespace.name, "addr", "add", f"{client_ip}/30", "dev", peer)
            _ip("-n", namespace.name, "link", "set", peer, "up")
            _ip("-n", namespace.name, "link", "set", "lo", "up")
            _ip("-n", namespace.name, "route", "add", "default", "via", host_ip)
            yield namespace
        finally:
            _ip("link", "del", namespace.host_link)
    finally:
        _ip("netns", "del", namespace.name)


def _free_network() -> ipaddress.IPv4Network:
    used = [ipaddress.ip_address(address) for address in _addresses()]
    candidates = list(NAMESPACE_POOL.subnets(new_prefix=30))
    while True:
        network = random.choice(candidates)
        if not any(address in network for address in used):
            return network


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
