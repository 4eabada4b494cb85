"""NFS exports: one export per Pi root or disk, readable by that one Pi only.

The database is the source of truth. Every change regenerates the whole exports
file from the full list the fleet passes in, so a crash or a lost update can never
leave a stale export behind for longer than the next publish. The file is replaced
atomically (temporary file in the same directory, fsync, rename) under a lock shared
by every bakery process on the host, then the NFS server is told to re-read it.

Every value that ends up in the file is checked before anything is written: the
original bakery exported ``*`` read-write, and an exports line is a small language
in which a space, a quote or a newline changes who may mount what.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bakery import fsutil, identifiers, nfsserver
from bakery.config import Settings

log = logging.getLogger(__name__)

KINDS = ("root", "disk")
DEFAULT_KERNEL_EXPORTS_FILE = Path("/etc/exports.d/bakery.exports")
#: Characters a path may hold: nothing that means something in exports(5) or ganesha.conf.
SAFE_PATH_RE = re.compile(r"/[A-Za-z0-9._/-]*")
#: Ganesha reserves 0 (pseudo root) and 1 is customary for a hand-written export.
FIRST_EXPORT_ID = 2
LAST_EXPORT_ID = 65000
EXPORT_ID_SPACE = LAST_EXPORT_ID - FIRST_EXPORT_ID + 1
#: How a rendered ganesha block names its tag, so ids can be carried over (see render_ganesha).
GANESHA_BLOCK_RE = re.compile(
    r"^EXPORT \{ # \w+ (?P<tag>[0-9a-f]{32})\n\s*Export_Id = (?P<id>\d+);", re.MULTILINE
)
HEADER = "# Written by bakery from its database; edits are overwritten on the next change.\n"
EXPORTFS_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


@dataclass(frozen=True)
class Export:
    """One directory exported read-write to one Pi."""

    path: Path  # absolute directory inside settings.root (a bake's root dir or a disk's dir)
    client: str  # the ONE Pi address allowed
    kind: str  # "root" | "disk"
    tag: str  # the bake id or disk id (32 hex)


class ExportError(RuntimeError):
    """The NFS server refused or could not be told about the new exports."""


class ExportBackend(Protocol):
    """Makes exactly the given exports visible; raises ValueError before writing anything
    if one is bad, ExportError if the NFS server could not be told."""

    def publish(self, exports: Sequence[Export]) -> None: ...


def validate_exports(root: Path, exports: Sequence[Export]) -> list[Export]:
    """Check every export and the list as a whole; return it normalised and sorted.

    Raises ValueError naming the first bad export. Identical duplicates are merged
    (publishing is idempotent); a path or tag claimed twice differently is refused,
    because two Pis sharing one writable root would corrupt it.
    """
    checked = sorted({_validate_export(root, export) for export in exports}, key=_sort_key)
    for field in ("path", "tag"):
        seen: dict[object, Export] = {}
        for export in checked:
            other = seen.setdefault(getattr(export, field), export)
            if other != export:
                raise ValueError(f"exports {other} and {export} share the same {field}")
    return checked


def _sort_key(export: Export) -> tuple[str, str]:
    return (str(export.path), export.client)


def _validate_export(root: Path, export: Export) -> Export:
    try:
        return Export(
            path=_validate_path(root, export.path),
            client=_validate_client(export.client),
            kind=_validate_kind(export.kind),
            tag=identifiers.object_id(export.tag, "export tag"),
        )
    except (ValueError, TypeError) as exc:
        raise ValueError(f"refusing export {export!r}: {exc}") from None


def _validate_path(root: Path, path: Path | str) -> Path:
    text = os.fspath(path)
    if not SAFE_PATH_RE.fullmatch(text):
        raise ValueError("path must be absolute and hold only letters, digits, '.', '_', '-', '/'")
    if os.path.normpath(text) != text or text.startswith("//"):
        raise ValueError("path must be normalised (no '..', '.', '//' or trailing '/')")
    real_root = Path(os.path.realpath(root))
    real_path = Path(os.path.realpath(text))
    if real_path == real_root or not real_path.is_relative_to(real_root):
        raise ValueError(f"path must lie inside the data directory {root}")
    return Path(text)


def _validate_client(client: str) -> str:
    """One host address: exports(5) would also take names, networks and wildcards."""
    address = identifiers.ip(client)
    parsed = ipaddress.ip_address(address)
    if "%" in address or parsed.is_unspecified or parsed.is_multicast:
        raise ValueError(f"client {client!r} is not a single unicast host address")
    return address


def _validate_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    return kind


def render_kernel(exports: Sequence[Export], options: str) -> str:
    """exports(5) lines for the kernel NFS server.

    The path is quoted; IPv6 clients are written without brackets (exports(5): brackets
    would be read as a wildcard character class). ``fsid`` is the tag in UUID form:
    unique and stable without any bookkeeping, and it keeps file handles valid across
    re-exports even when several exports live on one filesystem. The dashes matter:
    exportfs reads an all-digit fsid as a number.
    """
    lines = [HEADER]
    for export in exports:
        fsid = _uuid_form(export.tag)
        lines.append(f"# {export.kind} {export.tag}\n")
        lines.append(f'"{export.path}" {export.client}({options},fsid={fsid})\n')
    return "".join(lines)


def _uuid_form(tag: str) -> str:
    return f"{tag[:8]}-{tag[8:12]}-{tag[12:16]}-{tag[16:20]}-{tag[20:]}"


def render_ganesha(exports: Sequence[Export], keep: Mapping[str, int] | None = None) -> str:
    """One nfs-ganesha EXPORT block per export, reachable by exactly one client.

    The export itself grants nothing (``Access_Type = None``); only the CLIENT block
    for the Pi's address grants read-write, so a missing or mistyped client fails closed.
    ``Pseudo`` equals ``Path`` so NFSv4 and NFSv3 clients mount the same name.

    ``Export_Id`` is part of every NFS file handle ganesha hands out: if a Pi's export
    came back under another id after a regeneration, the Pi's mounted root would go
    stale and the Pi would hang. So the id is derived from the tag (a hash into
    2..65000) rather than from the export's position in the list, and collisions are
    resolved by probing the next free id in tag order. ``keep`` maps tags to the ids
    they already had (read back from the current file): those are honoured first, so a
    tag that was moved by a collision keeps its id when the tag it collided with goes.
    """
    ids = _export_ids([export.tag for export in exports], keep or {})
    blocks = [HEADER]
    for export in exports:
        blocks.append(_ganesha_block(export, ids[export.tag]))
    return "".join(blocks)


def _export_ids(tags: Sequence[str], keep: Mapping[str, int]) -> dict[str, int]:
    if len(tags) > EXPORT_ID_SPACE:
        raise ValueError(f"ganesha cannot hold more than {EXPORT_ID_SPACE} exports")
    ids: dict[str, int] = {}
    for tag in sorted(tags):
        kept = keep.get(tag, 0)
        if FIRST_EXPORT_ID <= kept <= LAST_EXPORT_ID and kept not in ids.values():
            ids[tag] = kept
    taken = set(ids.values())
    for tag in sorted(set(tags) - set(ids)):
        export_id = _hashed_export_id(tag)
        while export_id in taken:
            export_id = FIRST_EXPORT_ID + (export_id + 1 - FIRST_EXPORT_ID) % EXPORT_ID_SPACE
        ids[tag] = export_id
        taken.add(export_id)
    return ids


def _hashed_export_id(tag: str) -> int:
    digest = int.from_bytes(hashlib.sha256(tag.encode()).digest()[:8], "big")
    return FIRST_EXPORT_ID + digest % EXPORT_ID_SPACE


def _ganesha_block(export: Export, export_id: int) -> str:
    return (
        f"EXPORT {{ # {export.kind} {export.tag}\n"
        f"    Export_Id = {export_id};\n"
        f'    Path = "{export.path}";\n'
        f'    Pseudo = "{export.path}";\n'
        "    Protocols = 3, 4;\n"
        "    Access_Type = None;\n"
        "    Squash = No_Root_Squash;\n"
        "    SecType = sys;\n"
        # Bakery writes into roots behind ganesha's back (agent settings, the disks list,
        # both replaced by rename): without this, its cache serves the old file for a while.
        "    Attr_Expiration_Time = 0;\n"
        f"    CLIENT {{ Clients = {export.client}; Access_Type = RW; }}\n"
        "    FSAL { Name = VFS; }\n"
        "}\n"
    )


def read_ganesha_ids(text: str) -> dict[str, int]:
    """Tag → Export_Id as written in a file made by render_ganesha."""
    return {match["tag"]: int(match["id"]) for match in GANESHA_BLOCK_RE.finditer(text)}


def exports_lock(settings: Settings) -> AbstractContextManager[None]:
    """Serialise read + write + reload across processes (gunicorn workers, the TFTP server):
    interleaved publishes could reload the server with the older list, or hand out
    Export_Ids from a file another process is about to replace."""
    return fsutil.locked(settings.path("locks", "exports.lock"))


@dataclass(frozen=True)
class FileBackend:
    """A server that reads its exports from a file and re-reads it when told to."""

    settings: Settings
    exports_file: Path
    render: Callable[[Sequence[Export], Path], str]
    reload: Callable[[], None]

    def publish(self, exports: Sequence[Export]) -> None:
        checked = validate_exports(self.settings.root, exports)
        with exports_lock(self.settings):
            fsutil.write_atomically(self.exports_file, self.render(checked, self.exports_file))
            self.reload()


@dataclass(frozen=True)
class NoBackend:
    """For running without NFS (the simulated demo, no root): exports are checked, not served."""

    settings: Settings

    def publish(self, exports: Sequence[Export]) -> None:
        validate_exports(self.settings.root, exports)


def make_backend(settings: Settings) -> ExportBackend:
    """The backend ``settings.nfs_backend`` names, writing ``settings.exports_file`` if set."""
    if settings.nfs_backend == "kernel":
        return FileBackend(
            settings,
            Path(settings.exports_file or DEFAULT_KERNEL_EXPORTS_FILE),
            lambda exports, _file: render_kernel(exports, settings.export_options),
            _run_exportfs,
        )
    if settings.nfs_backend == "ganesha":
        pid_file = nfsserver.pid_file(settings)
        return FileBackend(
            settings,
            nfsserver.exports_path(settings),
            _render_ganesha_keeping_ids,
            lambda: _signal_ganesha(pid_file),
        )
    if settings.nfs_backend == "none":
        return NoBackend(settings)
    raise ValueError(f"unknown NFS backend {settings.nfs_backend!r}")


def publish(settings: Settings, exports: Sequence[Export]) -> None:
    """Make exactly ``exports`` visible: validate all, lock, render, write atomically, reload."""
    make_backend(settings).publish(exports)


def _render_ganesha_keeping_ids(exports: Sequence[Export], exports_file: Path) -> str:
    try:
        previous = exports_file.read_text()
    except FileNotFoundError:
        previous = ""
    return render_ganesha(exports, keep=read_ganesha_ids(previous))


def _run_exportfs() -> None:
    """``exportfs -ra`` re-reads /etc/exports and /etc/exports.d/ and syncs the kernel."""
    exportfs = shutil.which("exportfs", path=EXPORTFS_SEARCH_PATH)
    if exportfs is None:
        log.warning("exportfs not found: exports are written but not loaded")
        return
    result = subprocess.run([exportfs, "-ra"], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ExportError(f"exportfs -ra failed ({result.returncode}): {result.stderr.strip()}")


def _signal_ganesha(pid_file: Path | None) -> None:
    """SIGHUP makes ganesha re-read its exports. A server that is not running reads the
    file when it starts, so that is not an error; a stale pid file naming some other
    process must not get the signal (SIGHUP would kill most programs)."""
    pid = _ganesha_pid(pid_file)
    if pid is None:
        log.info("nfs-ganesha is not running: exports take effect when it starts")
        return
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        log.info("nfs-ganesha exited before reload: exports take effect when it starts")
    except PermissionError as exc:
        raise ExportError(f"cannot signal nfs-ganesha (pid {pid}): {exc.strerror}") from None


def _ganesha_pid(pid_file: Path | None) -> int | None:
    if pid_file is None:
        return None
    try:
        text = pid_file.read_text().strip()
    except FileNotFoundError:
        return None
    if not text.isdigit():
        raise ExportError(f"nfs-ganesha pid file {pid_file} does not hold a pid: {text[:40]!r}")
    try:
        command = Path(f"/proc/{text}/comm").read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if command.startswith("ganesha") else None
