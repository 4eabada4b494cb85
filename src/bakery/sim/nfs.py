"""Reading a file over NFS as a Pi's kernel would, with libnfs' ``nfs-cat``.

The kernel here has no NFS client, and nfs-ganesha serves NFSv4 without rpcbind, so
the read goes through libnfs over v4; Bakery's ganesha exports set ``Pseudo`` =
``Path``, so the path is the one ``nfsroot=`` names. ``nfs-cat`` sends from the
address of the network namespace it runs in: the Pi's.
"""

from __future__ import annotations

import subprocess

NFS_CAT = "nfs-cat"


class NfsError(Exception):
    """The server refused the read or did not answer; the message says which."""


def read_file(server: str, path: str, port: int, timeout: float = 10.0) -> bytes:
    """The content of ``path`` on ``server``, or NfsError."""
    if not path.startswith("/") or any(c in path for c in "?&#"):
        raise NfsError(f"NFS path {path!r} is not a plain absolute path")
    url = f"nfs://{server}{path}?nfsport={port}&version=4"
    try:
        done = subprocess.run([NFS_CAT, url], capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise NfsError(f"{server}:{path}: no answer in {timeout:.0f} s") from None
    except FileNotFoundError:
        raise NfsError(f"{NFS_CAT} is not installed (package libnfs-utils)") from None
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip().splitlines()
        raise NfsError(f"{server}:{path}: {message[-1] if message else 'refused'}")
    return done.stdout
