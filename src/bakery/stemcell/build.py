"""``bakery stemcell build``: a Raspberry Pi OS image plus a bosh-agent, as a BOSH stemcell.

A stemcell is a tarball of ``image`` and ``stemcell.MF`` (bosh-cpi.md §6). Its image is
what the CPI's create_stemcell imports as a bakeform, so it is an SD card image Bakery's
import accepts (here gzipped), with the BOSH agent, its ``agent.json`` (File settings
source: the file Bakery writes into each bake's root) and the disk agent added.

The image's ext4 root is changed with ``debugfs -w`` (libext2fs, user space) rather than a
loop mount: that needs no root, no loop device and no kernel parsing of the image, and it
edits the partition in place inside the image file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

from bakery import fsutil, identifiers
from bakery.config import Settings
from bakery.images import ImageError, read_layout
from bakery.images.layout import Partition
from bakery.images.receive import detect_compression
from bakery.images.tools import run_debugfs
from bakery.stemcell.install import RootEntry, RootFile, disk_agent_entries, unit_entries

AGENT_BINARY = "var/vcap/bosh/bin/bosh-agent"
AGENT_CONFIG = "var/vcap/bosh/agent.json"
#: Where Bakery writes each bake's agent settings, as the Pi sees it.
SETTINGS_PATH = f"/{Settings.agent_settings_path}"
#: What the CPI's ``info`` lists; the image is an SD card image, compressed or not.
STEMCELL_FORMATS = ("bakery-raw",)
API_VERSIONS = (2, 3)
CHUNK = 1024 * 1024
_DECOMPRESSORS = {"xz": ["xz", "-dc"], "gz": ["pigz", "-dc"]}
_TYPE_RE = re.compile(rb"Type: (\w+)")


class StemcellError(ValueError):
    """The stemcell cannot be built from these inputs; the message says why."""


def agent_config(settings_path: str = SETTINGS_PATH) -> dict[str, Any]:
    """The bosh-agent's ``agent.json`` for a netbooted Pi (bosh-cpi.md §3.2, §3.3).

    Settings come from the file Bakery writes into the root (no metadata service needed);
    disks are found by the virtio resolver globbing ``/dev/disk/by-id/*<cid>``, which the
    disk agent links. The root is NFS, so there is no root device to carve an ephemeral
    partition from: the CPI always gives an ephemeral disk instead.
    """
    return {
        "Platform": {
            "Linux": {
                "DevicePathResolutionType": "virtio",
                "ServiceManager": "systemd",
                "PartitionerType": "",
                "CreatePartitionIfNoEphemeralDisk": False,
                "UsePreformattedPersistentDisk": False,
                "BindMountPersistentDisk": False,
                "SkipDiskSetup": False,
            }
        },
        "Infrastructure": {
            "Settings": {
                "Sources": [{"Type": "File", "SettingsPath": settings_path}],
                "UseRegistry": False,
            }
        },
    }


def stemcell_entries(agent_binary: bytes) -> list[RootEntry]:
    """Everything a stemcell adds to the image's root."""
    config = json.dumps(agent_config(), indent=2, sort_keys=True) + "\n"
    return [
        RootFile(AGENT_BINARY, agent_binary, mode=0o755),
        RootFile(AGENT_CONFIG, config.encode()),
        *unit_entries("bosh-agent.service", "multi-user.target"),
        *disk_agent_entries(),
    ]


def manifest(*, name: str, version: str, api_version: int, sha1: str, operating_system: str) -> str:
    """``stemcell.MF`` as YAML; every value is a checked plain name, a number or a hex
    digest, so quoting strings is all the YAML writing this needs."""
    return (
        f"name: {_quoted(name)}\n"
        f"version: {_quoted(version)}\n"
        f"api_version: {api_version}\n"
        "bosh_protocol: '1'\n"
        f"sha1: {_quoted(sha1)}\n"
        f"operating_system: {_quoted(operating_system)}\n"
        f"stemcell_formats: [{', '.join(_quoted(f) for f in STEMCELL_FORMATS)}]\n"
        # what the CPI's create_stemcell names the bakeform by: a re-upload of the same
        # name and version replaces it instead of adding a randomly named one
        f"cloud_properties: {{name: {_quoted(name)}, version: {_quoted(version)}}}\n"
    )


def _quoted(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def build_stemcell(
    image: Path,
    agent_binary: Path,
    out: Path,
    *,
    name: str,
    version: str,
    api_version: int = 3,
    operating_system: str = "raspios",
) -> str:
    """Write the stemcell tarball `out` from the SD card `image` (raw, .xz or .gz) and the
    bosh-agent executable `agent_binary`; returns the manifest written.

    `out` appears complete or not at all. Raises StemcellError for bad arguments, an image
    Bakery would not import, or a root the files cannot be added to.
    """
    _check_arguments(name, version, api_version, operating_system)
    entries = stemcell_entries(agent_binary.read_bytes())
    with _workdir(out.parent) as work:
        raw = work / "raw.img"
        _decompress(image, raw)
        root = _root_partition(raw)
        _inject(raw, root, entries, work)
        packed = work / "image"
        _gzip(raw, packed)
        text = manifest(
            name=name,
            version=version,
            api_version=api_version,
            sha1=_sha1(packed),
            operating_system=operating_system,
        )
        (work / "stemcell.MF").write_text(text)
        _pack(work / "stemcell.tgz", [work / "stemcell.MF", packed])
        os.replace(work / "stemcell.tgz", out)
    return text


def _check_arguments(name: str, version: str, api_version: int, operating_system: str) -> None:
    try:
        identifiers.name(name, "stemcell name")
        identifiers.name(version, "stemcell version")
        identifiers.name(operating_system, "operating system")
    except identifiers.InvalidIdentifier as exc:
        raise StemcellError(str(exc)) from None
    if api_version not in API_VERSIONS:
        raise StemcellError(f"api_version must be one of {API_VERSIONS}, not {api_version}")


@contextmanager
def _workdir(parent: Path) -> Iterator[Path]:
    """Scratch space beside the output: the raw image is as large as the SD card, and the
    final rename into `out` must not cross filesystems."""
    work = Path(tempfile.mkdtemp(prefix=".stemcell-", dir=parent))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _decompress(image: Path, raw: Path) -> None:
    with image.open("rb") as source:
        compression = detect_compression(source.read(8))
    if compression == "none":
        shutil.copyfile(image, raw)
        return
    with image.open("rb") as source, raw.open("wb") as target:
        _run([*_DECOMPRESSORS[compression]], stdin=source, stdout=target)


def _root_partition(raw: Path) -> Partition:
    """The ext4 root, after the same checks the bakeform import makes: a stemcell whose
    image Bakery would refuse is no use."""
    try:
        return read_layout(raw).root
    except ImageError as exc:
        raise StemcellError(f"not a Raspberry Pi OS image: {exc}") from None


# -- writing into the ext4 root with debugfs -------------------------------------------------


def _inject(raw: Path, root: Partition, entries: list[RootEntry], work: Path) -> None:
    """Add `entries` to the ext4 filesystem at `root` inside `raw`.

    debugfs reports a failed command on stderr but still exits 0, and ``mkdir`` or
    ``write`` fail on existing entries: so what exists is asked first, the commands are
    planned to succeed, and any error output fails the build.
    """
    device = f"{raw.name}?offset={root.offset}"
    kinds = _kinds(device, work, _paths_involved(entries))
    commands: list[str] = []
    for number, entry in enumerate(entries):
        commands += _make_parents(entry.path, kinds)
        commands += _replace_existing(entry.path, kinds)
        if isinstance(entry, RootFile):
            (work / f"file{number}").write_bytes(entry.data)
            commands += _write_file(entry, f"file{number}")
        else:
            commands.append(f"symlink /{entry.path} {entry.target}")
    _debugfs(device, work, commands, write=True)


def _paths_involved(entries: list[RootEntry]) -> list[str]:
    paths: dict[str, None] = {}
    for entry in entries:
        path = PurePosixPath(entry.path)
        for parent in reversed(path.parents[:-1]):
            paths[str(parent)] = None
        paths[str(path)] = None
    return list(paths)


def _kinds(device: str, work: Path, paths: list[str]) -> dict[str, str]:
    """``{path: debugfs type}`` ("directory", "regular", "symlink", ...) of those that
    exist; with ``-f`` debugfs echoes each command, so the output splits per path."""
    output = _debugfs(device, work, [f"stat /{path}" for path in paths], write=False)
    kinds = {}
    for section in output.split(b"debugfs: stat /")[1:]:
        path, _, details = section.partition(b"\n")
        if match := _TYPE_RE.search(details):
            kinds[path.decode()] = match[1].decode()
    return kinds


def _make_parents(path: str, kinds: dict[str, str]) -> list[str]:
    commands = []
    for parent in map(str, reversed(PurePosixPath(path).parents[:-1])):
        kind = kinds.get(parent)
        if kind is None:
            commands += [f"mkdir /{parent}", *_owned_by_root(parent, 0o40755)]
            kinds[parent] = "directory"
        elif kind != "directory":
            raise StemcellError(f"/{parent} in the image is a {kind}, not a directory")
    return commands


def _replace_existing(path: str, kinds: dict[str, str]) -> list[str]:
    kind = kinds.get(path)
    if kind == "directory":
        raise StemcellError(f"/{path} in the image is a directory")
    return [] if kind is None else [f"rm /{path}"]


def _write_file(entry: RootFile, source: str) -> list[str]:
    return [f"write {source} /{entry.path}", *_owned_by_root(entry.path, 0o100000 | entry.mode)]


def _owned_by_root(path: str, mode: int) -> list[str]:
    return [f"sif /{path} mode 0{mode:o}", f"sif /{path} uid 0", f"sif /{path} gid 0"]


def _debugfs(device: str, work: Path, commands: list[str], *, write: bool) -> bytes:
    """Run `commands` in one debugfs; when writing, any complaint is an error (a read
    asks about paths that may not exist). Paths are relative to `work`."""
    try:
        done = run_debugfs(device, work, commands, write=write)
    except fsutil.CommandFailed as exc:
        raise StemcellError(str(exc)) from None
    if done.complaints and write:
        raise StemcellError(f"debugfs: {'; '.join(done.complaints)}")
    return done.output


# -- packing ---------------------------------------------------------------------------------


def _gzip(raw: Path, packed: Path) -> None:
    """gzip (pigz: all cores) keeps the tarball and every upload of it small; the image's
    free space is mostly zeros."""
    with packed.open("wb") as target:
        _run(["pigz", "-c", "--", str(raw)], stdout=target)


def _sha1(path: Path) -> str:
    digest = hashlib.sha1(usedforsecurity=False)  # what the director checks stemcell.MF with
    with path.open("rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _pack(tarball: Path, members: list[Path]) -> None:
    """A gzipped tar (the director runs ``tar -xzf``) of plain root-owned files; level 1,
    since the image inside is compressed already."""
    with tarfile.open(tarball, "w:gz", compresslevel=1) as tar:
        for member in members:
            info = tar.gettarinfo(member, arcname=member.name)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mode = 0o644
            with member.open("rb") as data:
                tar.addfile(info, data)


def _run(args: list[str], **redirects: Any) -> bytes:
    try:
        return fsutil.run(args, **redirects)
    except fsutil.CommandFailed as exc:
        raise StemcellError(str(exc)) from None
