"""NFS as a Pi's kernel uses it, with the libnfs tools: reading a file (``nfs-cat``) and
asking whether an export may be mounted (``nfs-ls``).

The kernel here has no NFS client, and nfs-ganesha serves NFSv4 without rpcbind, so
the requests go through libnfs over v4; Bakery's ganesha exports set ``Pseudo`` =
``Path``, so the path is the one ``nfsroot=`` names. The tools send from the address of
the network namespace they run in: the Pi's.
"""

from __future__ import annotations

import subprocess

NFS_CAT = "nfs-cat"
NFS_LS = "nfs-ls"


class NfsError(Exception):
    """The server refused the request or did not answer; the message says which."""


def read_file(server: str, path: str, port: int, timeout: float = 10.0) -> bytes:
    """The content of ``path`` on ``server``, or NfsError."""
    return _libnfs(NFS_CAT, server, path, port, timeout)


def check_export(server: str, path: str, port: int, timeout: float = 10.0) -> None:
    """NfsError unless ``server`` lets this address list the directory ``path``: what
    a mount of it needs."""
    _libnfs(NFS_LS, server, path, port, timeout)


def _libnfs(tool: str, server: str, path: str, port: int, timeout: float) -> bytes:
    if not path.startswith("/") or any(c in path for c in "?&#"):
        raise NfsError(f"NFS path {path!r} is not a plain absolute path")
    url = f"nfs://{server}{path}?nfsport={port}&version=4"
    try:
        done = subprocess.run([tool, url], capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise NfsError(f"{server}:{path}: no answer in {timeout:.0f} s") from None
    except FileNotFoundError:
        raise NfsError(f"{tool} is not installed (package libnfs-utils)") from None
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip().splitlines()
        raise NfsError(f"{server}:{path}: {message[-1] if message else 'refused'}")
    return done.stdout
