"""The ext4 root filesystem, read with ``debugfs`` (libext2fs, user space): the tree
listed level by level and vetted (unique names, no ``/`` in names, no directory
reachable twice), and every inode's ``stat`` parsed into what writing it needs."""

from __future__ import annotations

import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NoReturn

from .errors import ImageError
from .tools import debugfs

EXT4_INCOMPAT_64BIT = 0x80
EXT4_HUGE_FILE_FL = 0x40000
EXT4_INLINE_DATA_FL = 0x10000000
ROOT_INODE = 2
#: Limits on an imported root, far above any Pi OS (Raspberry Pi OS with desktop is
#: ~20 directories deep, ~300,000 entries, paths under 300 bytes) and far below what
#: breaks the host: PATH_MAX is 4096 with the data dir's own path in front, and each
#: entry costs memory while the tree is planned.
MAX_ROOT_DEPTH = 256
MAX_ROOT_ENTRIES = 1_000_000
MAX_ROOT_PATH = 3072


@dataclass(frozen=True)
class Slot:
    """One line of ``debugfs ls -p``: a slot of one directory (inode 0 when unused)."""

    inode: int
    mode: int
    uid: int
    gid: int
    name: bytes
    size: int


@dataclass(frozen=True)
class TreeEntry:
    """One entry of the root filesystem's tree, with its path from the root."""

    path: bytes  # relative to the root, b"" for the root itself
    inode: int
    mode: int
    uid: int
    gid: int
    size: int


def list_root_tree(device: str, cwd: Path) -> list[TreeEntry]:
    """Every entry of the filesystem, breadth first, one debugfs run per tree level.

    Rejects what would make ``rdump`` write outside its destination or loop: names with
    ``/``, duplicate names in a directory, a directory reachable twice, bogus ``.``/``..``;
    and a tree past the ``MAX_ROOT_*`` limits, before any of it is written.
    """
    root = TreeEntry(b"", ROOT_INODE, stat.S_IFDIR | 0o755, 0, 0, 0)
    entries = [root]
    level = {ROOT_INODE: b""}
    seen_dirs = {ROOT_INODE}
    depth = 0
    while level:
        depth += 1
        if depth > MAX_ROOT_DEPTH:
            too_large(f"directories nest deeper than {MAX_ROOT_DEPTH} levels")
        listings = _list_dirs(device, cwd, list(level))
        next_level: dict[int, bytes] = {}
        for inode, path in level.items():
            children = _children(listings.get(inode, []), inode, path)
            if inode == ROOT_INODE:
                entries[0] = children.pop(0)
            if len(entries) + len(children) > MAX_ROOT_ENTRIES:
                too_large(f"it holds more than {MAX_ROOT_ENTRIES} files and directories")
            for child in children:
                if len(child.path) > MAX_ROOT_PATH:
                    too_large(f"a path is longer than {MAX_ROOT_PATH} bytes: {child.path[:80]!r}")
                entries.append(child)
                if not stat.S_ISDIR(child.mode):
                    continue
                if child.inode in seen_dirs:
                    corrupt(f"directory inode {child.inode} is linked twice (at {child.path!r})")
                seen_dirs.add(child.inode)
                next_level[child.inode] = child.path
        level = next_level
    return entries


def _children(listing: list[Slot], inode: int, path: bytes) -> list[TreeEntry]:
    """Entries of one directory; the root's own entry ('.') first when ``path`` is root."""
    if len(listing) < 2 or listing[0].name != b"." or listing[1].name != b"..":
        corrupt(f"directory {path or b'/'!r} (inode {inode}) lacks its '.' and '..' entries")
    dot, dotdot = listing[0], listing[1]
    if dot.inode != inode or not stat.S_ISDIR(dot.mode) or not stat.S_ISDIR(dotdot.mode):
        corrupt(f"directory {path or b'/'!r} (inode {inode}) has bogus '.' or '..' entries")
    children = [TreeEntry(b"", inode, dot.mode, dot.uid, dot.gid, 0)] if not path else []
    names: set[bytes] = set()
    for slot in listing[2:]:
        if slot.inode == 0:
            continue  # an unused slot (lost+found is full of them)
        if slot.name in (b"", b".", b"..") or slot.name in names:
            corrupt(f"directory {path or b'/'!r} has a duplicate or reserved name {slot.name!r}")
        names.add(slot.name)
        child_path = path + b"/" + slot.name if path else slot.name
        children.append(TreeEntry(child_path, slot.inode, slot.mode, slot.uid, slot.gid, slot.size))
    return children


_SECTION = re.compile(rb"^debugfs: \w+ (?:-p )?<(\d+)>$")


def _sections(output: bytes) -> Iterator[tuple[int, list[bytes]]]:
    """Split debugfs -f output into (inode, lines) per echoed command."""
    inode: int | None
    lines: list[bytes]
    inode, lines = None, []
    for line in output.split(b"\n"):
        match = _SECTION.match(line)
        if match:
            if inode is not None:
                yield inode, lines
            inode, lines = int(match.group(1)), []
        elif line and inode is not None:
            lines.append(line)
    if inode is not None:
        yield inode, lines


def _list_dirs(device: str, cwd: Path, inodes: list[int]) -> dict[int, list[Slot]]:
    output = debugfs(device, cwd, [f"ls -p <{i}>" for i in inodes], code="corrupt_root")
    return {inode: [_parse_ls_line(line) for line in lines] for inode, lines in _sections(output)}


def _parse_ls_line(line: bytes) -> Slot:
    """``/inode/mode/uid/gid/name/size/``, mode in octal."""
    fields = line.split(b"/")
    if len(fields) != 8 or fields[0] or fields[7]:
        corrupt(f"root filesystem has an unsafe file name (contains '/' or a newline): {line!r}")
    try:
        inode, mode, uid, gid = int(fields[1]), int(fields[2], 8), int(fields[3]), int(fields[4])
        size = int(fields[6] or 0)
    except ValueError:
        corrupt(f"debugfs listed an unreadable entry: {line!r}")
    return Slot(inode, mode, uid, gid, fields[5], size)


def corrupt(message: str) -> NoReturn:
    raise ImageError("corrupt_root", f"root filesystem rejected: {message}")


def too_large(message: str) -> NoReturn:
    raise ImageError("root_too_large", f"root filesystem rejected: {message}")


@dataclass(frozen=True)
class Run:
    """Consecutive blocks of a file, as debugfs lists an extent or a block map range."""

    logical: int  # first block in the file
    physical: int  # first block in the filesystem
    length: int  # blocks
    written: bool  # False for an unwritten (preallocated) extent: it reads as zeros


@dataclass(frozen=True)
class InodeDetails:
    """What ``ls -p`` does not say."""

    atime: tuple[int, int]  # seconds, nanoseconds
    mtime: tuple[int, int]
    blocks: int  # 512-byte units allocated (data, map and extended attribute blocks)
    device: tuple[int, int] | None  # major, minor of device nodes
    flags: int
    xattr_block: bool
    runs: tuple[Run, ...] | None  # None: debugfs listed no block map we understand
    map_blocks: int  # blocks of the extent tree or indirect blocks themselves
    xattr_names: tuple[str, ...]  # extended attributes, by name (``stat`` lists no values)
    xattrs: tuple[tuple[str, bytes], ...] = ()  # with their values, once ``read_xattrs`` ran


def inode_details(device: str, cwd: Path, entries: list[TreeEntry]) -> dict[int, InodeDetails]:
    """``stat`` of every inode, in one debugfs run."""
    inodes = sorted({e.inode for e in entries})
    output = debugfs(device, cwd, [f"stat <{i}>" for i in inodes], code="corrupt_root")
    sections = list(_sections(output))
    if [inode for inode, _ in sections] != inodes:
        corrupt("debugfs stat output does not match the inodes asked for")
    return {inode: _parse_stat(b"\n".join(lines)) for inode, lines in sections}


_MAP_RUN = re.compile(rb"\((\d+)(?:-(\d+))?(\[u\])?\):(\d+)(?:-(\d+))?")
_MAP_NODE = re.compile(rb"\((?:ETB\d+|IND|DIND|TIND)\):\d+")
_MAP_SEPARATORS = re.compile(rb"[ ,]*")


def _parse_stat(text: bytes) -> InodeDetails:
    def number(pattern: bytes, base: int = 10) -> int:
        match = re.search(pattern, text)
        return int(match.group(1), base) if match else 0

    def time_of(name: bytes) -> tuple[int, int]:
        match = re.search(rb"\b" + name + rb": 0x([0-9a-f]+)(?::([0-9a-f]+))?", text)
        if match is None:
            return 0, 0
        extra = int(match.group(2) or b"0", 16)
        return int(match.group(1), 16) + ((extra & 3) << 32), extra >> 2

    device = re.search(rb"Device major/minor number: ([0-9]+):([0-9]+)", text)
    block_map = re.search(rb"^(?:EXTENTS|BLOCKS):\n?(.*)$", text, re.MULTILINE)
    runs, map_blocks = _parse_block_map(block_map.group(1)) if block_map else (None, 0)
    return InodeDetails(
        atime=time_of(b"atime"),
        mtime=time_of(b"mtime"),
        blocks=number(rb"Blockcount: (\d+)"),
        device=(int(device.group(1)), int(device.group(2))) if device else None,
        flags=number(rb"Flags: 0x([0-9a-f]+)", 16),
        xattr_block=number(rb"File ACL: (\d+)") != 0,
        runs=runs,
        map_blocks=map_blocks,
        xattr_names=_xattr_names(text),
    )


#: The extended attributes a root may carry: file capabilities, SELinux/IMA labels and
#: other ``security.*``, POSIX ACLs, ``trusted.*`` (overlayfs) and ``user.*``, with names
#: debugfs prints as they are and takes back on its command line: printable ASCII without
#: blanks, quotes or backslashes (debugfs escapes the rest, ambiguously).
_XATTR_NAME = re.compile(
    r"(?:security|trusted|user)\.[!#-\[\]-~]+|system\.posix_acl_(?:access|default)"
)
#: Where ext4 keeps inline data: a file's contents, not an attribute of it.
_INLINE_DATA_XATTR = "system.data"
#: ``  name (length)``, then `` = value`` if debugfs shows it.
_XATTR_LINE = re.compile(rb"  (.+?) \((\d+)\)(?: = .*)?")


def _xattr_names(text: bytes) -> tuple[str, ...]:
    """The names under ``stat``'s "Extended attributes:" heading, one indented line each
    (``  security.capability (20) = 01 00 ...``). A name Bakery cannot carry faithfully is
    refused, never dropped."""
    start = text.find(b"\nExtended attributes:\n")
    if start < 0:
        return ()
    names = []
    for line in text[start:].split(b"\n")[2:]:
        if not line.startswith(b"  "):
            break
        match = _XATTR_LINE.fullmatch(line)
        name = match.group(1).decode("ascii", errors="replace") if match else ""
        if name == _INLINE_DATA_XATTR:
            continue
        if not _XATTR_NAME.fullmatch(name):
            shown = name or line.decode("ascii", errors="replace")
            corrupt(f"an extended attribute has a name Bakery cannot carry: {shown[:80]!r}")
        names.append(name)
    return tuple(names)


def read_xattrs(
    device: str, cwd: Path, scratch: str, details: dict[int, InodeDetails]
) -> dict[int, InodeDetails]:
    """``details`` with the values of every inode's extended attributes, read with
    ``ea_get`` (one debugfs run) into files under ``scratch`` (relative to ``cwd``, empty
    again afterwards). debugfs gives POSIX ACLs in the form ``setxattr`` takes, not
    ext4's on-disk one."""
    wanted = [(inode, name) for inode, info in details.items() for name in info.xattr_names]
    if not wanted:
        return details
    commands = [
        f"ea_get -f {scratch}/xattr{index} <{inode}> {name}"
        for index, (inode, name) in enumerate(wanted)
    ]
    debugfs(device, cwd, commands, code="corrupt_root")
    values: dict[int, list[tuple[str, bytes]]] = {}
    for index, (inode, name) in enumerate(wanted):
        value_file = cwd / scratch / f"xattr{index}"
        values.setdefault(inode, []).append((name, value_file.read_bytes()))
        value_file.unlink()
    return {
        inode: replace(info, xattrs=tuple(values[inode])) if inode in values else info
        for inode, info in details.items()
    }


def _parse_block_map(line: bytes) -> tuple[tuple[Run, ...] | None, int]:
    """Runs and map blocks of a line like ``(0-11):2138-2149, (IND):2150, (12[u]):2151``;
    (None, 0) if anything on it is not understood."""
    runs = []
    for match in _MAP_RUN.finditer(line):
        first, last, unwritten, physical, physical_last = match.groups()
        length = int(last or first) - int(first) + 1
        if int(physical_last or physical) - int(physical) + 1 != length or length < 1:
            return None, 0
        runs.append(Run(int(first), int(physical), length, unwritten is None))
    nodes = len(_MAP_NODE.findall(line))
    if _MAP_SEPARATORS.fullmatch(_MAP_NODE.sub(b"", _MAP_RUN.sub(b"", line))) is None:
        return None, 0
    return tuple(runs), nodes
