"""``bakery stemcell build``: a Raspberry Pi OS image plus a bosh-agent, as a BOSH stemcell.

A stemcell is a tarball of ``image`` and ``stemcell.MF`` (bosh-cpi.md §6). Its image is
what the CPI's create_stemcell imports as a bakeform, so it is an SD card image Bakery's
import accepts (here gzipped), with what the real bosh-agent needs added: the agent, its
``agent.json`` (File settings source: the file Bakery writes into each bake's root), the
stemcell scripts it runs at start, monit 5.2.5 compiled for the image's architecture, the
user vcap and the groups it expects, systemd units for both, and the disk agent.

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
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from bakery import fsutil, identifiers
from bakery.config import Settings
from bakery.images import ImageError, read_layout
from bakery.images.layout import Partition
from bakery.images.receive import detect_compression
from bakery.images.tools import run_debugfs
from bakery.stemcell import accounts, monit
from bakery.stemcell.architecture import Architecture, elf_architecture
from bakery.stemcell.install import (
    UNIT_DIR,
    RootEntry,
    RootFile,
    disk_agent_entries,
    packaged_file,
    unit_entries,
)

BOSH_DIR = "var/vcap/bosh"
AGENT_BINARY = f"{BOSH_DIR}/bin/bosh-agent"
AGENT_CONFIG = f"{BOSH_DIR}/agent.json"
#: The scripts the agent runs at start (from its PATH, and by this absolute path).
AGENT_SCRIPTS = ("bosh-agent-rc", "bosh-start-logging-and-auditing")
MONIT_CONFIG = f"{BOSH_DIR}/etc/monitrc"
#: Where the agent writes monit.user and the jobs' control files.
MONIT_DIR = "var/vcap/monit"
#: A program of the image itself, whose ELF header says what the image runs on.
IMAGE_PROGRAMS = ("usr/bin/ls", "bin/ls")
#: Where Bakery writes each bake's agent settings, as the Pi sees it.
SETTINGS_PATH = f"/{Settings.agent_settings_path}"
#: What the CPI's ``info`` lists; the image is an SD card image, compressed or not.
STEMCELL_FORMATS = ("bakery-raw",)
API_VERSIONS = (2, 3)
CHUNK = 1024 * 1024
_DECOMPRESSORS = {"xz": ["xz", "-dc"], "gz": ["pigz", "-dc"]}
_STAT_RE = re.compile(rb"Type: (\w+)\s+Mode:\s+(\d+).*?User:\s+(\d+)\s+Group:\s+(\d+)", re.DOTALL)


class StemcellError(ValueError):
    """The stemcell cannot be built from these inputs; the message says why."""


def agent_config(settings_path: str = SETTINGS_PATH) -> dict[str, Any]:
    """The bosh-agent's ``agent.json`` for a netbooted Pi (bosh-cpi.md §3.2, §3.3,
    bosh-agent.md).

    Settings come from the file Bakery writes into the root (no metadata service needed).
    Disks are found by the virtio resolver globbing ``/dev/disk/by-id/*<cid>``, which the
    disk agent links. The root is NFS: there is no root device to grow or carve an
    ephemeral partition from, so the agent's disk setup is skipped (``SkipDiskSetup``, as
    on the warden stemcell) and ``/var/vcap/data`` is what the Pi has there. monit and the
    agent are systemd services, as on current stemcells and on Raspberry Pi OS.
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
                "SkipDiskSetup": True,
                "UseDefaultTmpDir": True,
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
    """What a stemcell adds to the image's root but its accounts and monit's executable
    (which is compiled once all of this is in: a refusal comes before a long build)."""
    config = json.dumps(agent_config(), indent=2, sort_keys=True) + "\n"
    return [
        RootFile(AGENT_BINARY, agent_binary, mode=0o755),
        RootFile(AGENT_CONFIG, config.encode()),
        *(RootFile(f"{BOSH_DIR}/bin/{name}", packaged_file(name), 0o755) for name in AGENT_SCRIPTS),
        *unit_entries("bosh-agent.service", "multi-user.target"),
        RootFile(MONIT_CONFIG, packaged_file("monitrc"), mode=0o700),  # monit insists
        RootFile(f"{MONIT_DIR}/empty.monitrc", b""),
        # not enabled: the agent starts monit once it has set the VM up
        RootFile(f"{UNIT_DIR}/monit.service", packaged_file("monit.service")),
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
    monit_source: Path,
    name: str,
    version: str,
    api_version: int = 3,
    operating_system: str = "raspios",
) -> str:
    """Write the stemcell tarball `out` from the SD card `image` (raw, .xz or .gz), the
    bosh-agent executable `agent_binary` and monit's source tarball `monit_source`;
    returns the manifest written.

    `out` appears complete or not at all. Raises StemcellError for bad arguments, an agent
    for another architecture than the image's, an image Bakery would not import, a root
    the files cannot be added to, or monit failing to build. Everything that can be
    checked is checked before monit is compiled.
    """
    _check_arguments(name, version, api_version, operating_system)
    agent = agent_binary.read_bytes()
    architecture = _agent_architecture(agent_binary, agent)
    with _workdir(out.parent) as work:
        raw = work / "raw.img"
        _decompress(image, raw)
        root = _ImageRoot(raw, _root_partition(raw), work)
        _check_image_architecture(root, architecture)
        root.write([*stemcell_entries(agent), *_account_entries(root)])
        try:
            monit_binary = monit.build_monit(monit_source, architecture, work)
        except monit.MonitBuildError as exc:
            raise StemcellError(str(exc)) from None
        root.write([RootFile(monit.BINARY, monit_binary, mode=0o755)])
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


def _agent_architecture(path: Path, agent: bytes) -> Architecture:
    architecture = elf_architecture(agent[:64])
    if architecture is None:
        raise StemcellError(
            f"{path} is not a bosh-agent executable for Linux on amd64, arm64 or armhf"
        )
    return architecture


def _check_image_architecture(root: _ImageRoot, agent: Architecture) -> None:
    """The agent (and the monit built for it) must run on the image's CPU."""
    found = root.inodes(list(IMAGE_PROGRAMS))
    program = next((p for p in IMAGE_PROGRAMS if found.get(p, _NONE).kind == "regular"), None)
    if program is None:
        raise StemcellError("cannot tell what CPU the image is for: it has no /usr/bin/ls")
    architecture = elf_architecture(root.read([program])[program][:64])
    if architecture != agent:
        image = architecture.name if architecture else "an unknown CPU"
        raise StemcellError(f"the image is for {image} but the bosh-agent for {agent.name}")


def _account_entries(root: _ImageRoot) -> list[RootEntry]:
    """The account files with vcap and the agent's groups added, each keeping its mode and
    owner (``/etc/shadow`` is root:shadow 0640 on Debian), and the sudoers rule."""
    found = root.inodes(list(accounts.FILES))
    missing = [f"/{path}" for path in accounts.FILES if found.get(path, _NONE).kind != "regular"]
    if missing:
        raise StemcellError(f"the image's root has no {', '.join(missing)}: not a Debian root")
    texts = {
        path: data.decode(errors="surrogateescape")
        for path, data in root.read(list(accounts.FILES)).items()
    }
    try:
        edited = accounts.add_bosh_accounts(
            accounts.Accounts(*(texts[path] for path in accounts.FILES)),
            days_since_epoch=int(time.time() // 86400),
        )
    except accounts.AccountsError as exc:
        raise StemcellError(f"the image's accounts: {exc}") from None
    new_texts = (edited.passwd, edited.group, edited.shadow, edited.gshadow)
    return [
        *(
            RootFile(
                path,
                text.encode(errors="surrogateescape"),
                found[path].mode,
                found[path].uid,
                found[path].gid,
            )
            for path, text in zip(accounts.FILES, new_texts, strict=True)
        ),
        RootFile(accounts.SUDOERS_PATH, accounts.SUDOERS, mode=0o440),
    ]


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


# -- reading and writing the ext4 root with debugfs ------------------------------------------


@dataclass(frozen=True)
class _Inode:
    """What debugfs ``stat`` says of an entry: its type ("regular", "directory",
    "symlink"...), permission bits and owner."""

    kind: str
    mode: int = 0
    uid: int = 0
    gid: int = 0


_NONE = _Inode("absent")


class _ImageRoot:
    """The ext4 root partition inside a raw image file, read and written in place."""

    def __init__(self, raw: Path, partition: Partition, work: Path) -> None:
        self.device = f"{raw.name}?offset={partition.offset}"
        self.work = work  # where debugfs runs: its paths are relative to it

    def inodes(self, paths: list[str]) -> dict[str, _Inode]:
        """``{path: inode}`` of those of `paths` that exist; with ``-f`` debugfs echoes
        each command, so the output splits per path."""
        output = self._debugfs([f"stat /{path}" for path in paths], missing_is_fine=True)
        found = {}
        for section in output.split(b"debugfs: stat /")[1:]:
            path, _, details = section.partition(b"\n")
            if match := _STAT_RE.search(details):
                kind, mode, uid, gid = match.groups()
                found[path.decode()] = _Inode(kind.decode(), int(mode, 8), int(uid), int(gid))
        return found

    def read(self, paths: list[str]) -> dict[str, bytes]:
        """The contents of the regular files `paths`."""
        names = {path: f"read{number}" for number, path in enumerate(paths)}
        self._debugfs([f"dump /{path} {name}" for path, name in names.items()])
        return {path: (self.work / name).read_bytes() for path, name in names.items()}

    def write(self, entries: list[RootEntry]) -> None:
        """Add `entries`, replacing what is at their paths.

        debugfs reports a failed command on stderr but still exits 0, and ``mkdir`` or
        ``write`` fail on existing entries: so what exists is asked first, the commands
        are planned to succeed, and any error output fails the build.
        """
        kinds = {path: inode.kind for path, inode in self.inodes(_paths_involved(entries)).items()}
        commands: list[str] = []
        for number, entry in enumerate(entries):
            commands += _make_parents(entry.path, kinds)
            commands += _replace_existing(entry.path, kinds)
            if isinstance(entry, RootFile):
                (self.work / f"file{number}").write_bytes(entry.data)
                commands += _write_file(entry, f"file{number}")
            else:
                commands.append(f"symlink /{entry.path} {entry.target}")
        self._debugfs(commands, write=True)

    def _debugfs(
        self, commands: list[str], *, write: bool = False, missing_is_fine: bool = False
    ) -> bytes:
        """Run `commands` in one debugfs; any complaint is an error, unless the commands
        only ask about paths that may not exist."""
        try:
            done = run_debugfs(self.device, self.work, commands, write=write)
        except fsutil.CommandFailed as exc:
            raise StemcellError(str(exc)) from None
        if done.complaints and not missing_is_fine:
            raise StemcellError(f"debugfs: {'; '.join(done.complaints)}")
        return done.output


def _paths_involved(entries: list[RootEntry]) -> list[str]:
    paths: dict[str, None] = {}
    for entry in entries:
        path = PurePosixPath(entry.path)
        for parent in reversed(path.parents[:-1]):
            paths[str(parent)] = None
        paths[str(path)] = None
    return list(paths)


def _make_parents(path: str, kinds: dict[str, str]) -> list[str]:
    commands = []
    for parent in map(str, reversed(PurePosixPath(path).parents[:-1])):
        kind = kinds.get(parent)
        if kind is None:
            commands += [f"mkdir /{parent}", *_owned(parent, 0o40755, 0, 0)]
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
    return [
        f"write {source} /{entry.path}",
        *_owned(entry.path, 0o100000 | entry.mode, entry.uid, entry.gid),
    ]


def _owned(path: str, mode: int, uid: int, gid: int) -> list[str]:
    return [f"sif /{path} mode 0{mode:o}", f"sif /{path} uid {uid}", f"sif /{path} gid {gid}"]


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
