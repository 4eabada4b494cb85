"""NFS exports: each Pi's root and disks reach that Pi only, and the file is never half-written."""

from __future__ import annotations

import ctypes
import ipaddress
import multiprocessing
import os
import random
import re
import subprocess
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from bakery.config import Settings
from bakery.exports import (
    DEFAULT_KERNEL_EXPORTS_FILE,
    Export,
    ExportError,
    make_backend,
    publish,
    read_ganesha_ids,
    render_ganesha,
    render_kernel,
    validate_exports,
)
from bakery.sim.ganesha import Ganesha, running_ganesha
from bakery.sim.wait import wait_until
from tests.support.ganesha import (
    NFS_LAB_TOOLS,
    ClientNamespace,
    client_namespace,
    nfs_cat,
    nfs_ls,
)

OPTIONS = "rw,sync,no_subtree_check,no_root_squash"
TAG_A = "0123456789abcdef0123456789abcdef"
TAG_B = "fedcba9876543210fedcba9876543210"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(root=tmp_path / "data", nfs_backend="ganesha")


def exports_file(settings: Settings) -> Path:
    return settings.path("nfs", "ganesha-exports.conf")


def root_export(settings: Settings, tag: str, client: str) -> Export:
    return Export(settings.path("bakes", tag, "root"), client, "root", tag)


def random_tag(rng: random.Random) -> str:
    return f"{rng.getrandbits(128):032x}"


def random_client(rng: random.Random) -> str:
    if rng.random() < 0.3:
        return str(ipaddress.IPv6Address((0xFD << 120) | rng.getrandbits(120)))
    return str(ipaddress.IPv4Address(rng.randrange(0x0A000001, 0x0AFFFFFE)))


def random_exports(settings: Settings, rng: random.Random, count: int) -> list[Export]:
    exports = []
    for _ in range(count):
        tag, kind = random_tag(rng), rng.choice(["root", "disk"])
        path = (
            settings.path("bakes", tag, "root") if kind == "root" else settings.path("disks", tag)
        )
        exports.append(Export(path, random_client(rng), kind, tag))
    return exports


# --- rendering ---------------------------------------------------------------------------------


def test_kernel_line_quotes_the_path_and_names_the_owner_with_a_stable_fsid(settings: Settings):
    export = root_export(settings, TAG_A, "10.0.0.7")

    text = render_kernel([export], OPTIONS)

    assert (
        f'"{export.path}" 10.0.0.7({OPTIONS},fsid=01234567-89ab-cdef-0123-456789abcdef)\n' in text
    )


def test_kernel_lines_write_ipv6_clients_without_brackets(settings: Settings):
    text = render_kernel([root_export(settings, TAG_A, "fd00::7")], OPTIONS)

    assert " fd00::7(" in text and "[" not in text


def test_ganesha_block_grants_read_write_to_the_owner_and_nothing_to_anyone_else(
    settings: Settings,
):
    export = root_export(settings, TAG_A, "10.0.0.7")

    text = render_ganesha([export])

    block = text[text.index("EXPORT {") :]
    assert f'Path = "{export.path}";' in block
    assert f'Pseudo = "{export.path}";' in block
    assert "Protocols = 3, 4;" in block
    assert re.findall(r"Access_Type = (\w+);", block) == ["None", "RW"]
    assert re.findall(r"Clients = ([^;]*);", block) == ["10.0.0.7"]
    assert "Squash = No_Root_Squash;" in block and "Name = VFS;" in block


def test_rendered_files_never_grant_a_path_to_anyone_but_its_owner(settings: Settings):
    rng = random.Random(1234)
    for _ in range(20):
        exports = validate_exports(settings.root, random_exports(settings, rng, rng.randint(1, 30)))
        owners = {str(export.path): export.client for export in exports}

        kernel = render_kernel(exports, OPTIONS)
        ganesha = render_ganesha(exports)

        assert "*" not in kernel and "*" not in ganesha
        kernel_lines = [line for line in kernel.splitlines() if not line.startswith("#")]
        granted = [
            re.fullmatch(r'"([^"]+)" ([0-9a-f.:]+)\(([^()]*)\)', line) for line in kernel_lines
        ]
        assert all(granted) and {m[1]: m[2] for m in granted} == owners
        blocks = re.findall(r'Path = "([^"]+)";.*?Clients = ([^;]+);', ganesha, re.DOTALL)
        assert dict(blocks) == owners and ganesha.count("Clients =") == len(exports)


def test_an_empty_list_renders_a_file_of_comments_only(settings: Settings):
    for text in (render_kernel([], OPTIONS), render_ganesha([])):
        assert text and all(line.startswith("#") for line in text.splitlines())


def test_export_ids_are_unique_in_range_and_do_not_depend_on_the_other_exports(
    settings: Settings,
):
    rng = random.Random(99)
    everything = validate_exports(settings.root, random_exports(settings, rng, 200))

    all_ids = read_ganesha_ids(render_ganesha(everything))
    some_ids = read_ganesha_ids(render_ganesha(everything[50:120]))

    assert len(set(all_ids.values())) == 200
    assert all(2 <= export_id <= 65000 for export_id in all_ids.values())
    assert all(all_ids[tag] == some_ids[tag] for tag in some_ids)


def colliding_tags() -> tuple[str, str]:
    """Two tags whose hashed Export_Ids collide (found by search: the id space is small)."""
    seen: dict[int, str] = {}
    for number in range(1, 100_000):
        tag = f"{number:032x}"
        export_id = read_ganesha_ids(render_ganesha([Export(Path("/x"), "10.0.0.1", "disk", tag)]))
        if export_id[tag] in seen:
            return seen[export_id[tag]], tag
        seen[export_id[tag]] = tag
    raise AssertionError("no collision found")


def test_a_tag_moved_by_a_collision_keeps_its_id_when_the_other_tag_goes(settings: Settings):
    first, second = colliding_tags()
    both = [root_export(settings, first, "10.0.0.1"), root_export(settings, second, "10.0.0.2")]

    publish(settings, both)
    ids_with_both = read_ganesha_ids(exports_file(settings).read_text())
    publish(settings, both[1:])
    ids_alone = read_ganesha_ids(exports_file(settings).read_text())

    assert ids_with_both[first] != ids_with_both[second]
    assert ids_alone[second] == ids_with_both[second]


# --- validation ----------------------------------------------------------------------------------


def hostile(settings: Settings) -> dict[str, Export]:
    good = root_export(settings, TAG_B, "10.0.0.9")
    inside = str(settings.path("bakes", TAG_B))
    return {
        "wildcard line as path": replace(good, path=Path("/srv/x *(rw)")),
        "space in path": replace(good, path=Path(f"{inside}/x *(rw)")),
        "newline in path": replace(good, path=Path(f'{inside}/x"\n"/ *(rw)')),
        "quote in path": replace(good, path=Path(f'{inside}/x"')),
        "hash in path": replace(good, path=Path(f"{inside}/#x")),
        "parenthesis in path": replace(good, path=Path(f"{inside}/x(rw)")),
        "dot-dot in path": replace(good, path=Path(f"{inside}/../../../../etc")),
        "relative path": replace(good, path=Path("bakes/x")),
        "path outside root": replace(good, path=Path("/etc")),
        "the data dir itself": replace(good, path=settings.root),
        "network client": replace(good, client="1.2.3.4/24"),
        "wildcard client": replace(good, client="*"),
        "hostname client": replace(good, client="host.example"),
        "newline in client": replace(good, client="10.0.0.9\n/srv *(rw)"),
        "scoped ipv6 client": replace(good, client="fe80::1%eth0 *"),
        "unspecified client": replace(good, client="0.0.0.0"),
        "empty client": replace(good, client=""),
        "unknown kind": replace(good, kind="root *"),
        "tag with a path": replace(good, tag="../" + TAG_B[3:]),
        "upper-case tag": replace(good, tag=TAG_B.upper()),
    }


HOSTILE_NAMES = list(hostile(Settings(root=Path("/data"))))


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_hostile_export_is_refused_and_the_previous_file_is_left_untouched(
    settings: Settings, name: str
):
    previous = [root_export(settings, TAG_A, "10.0.0.1")]
    publish(settings, previous)
    before = exports_file(settings).read_bytes()
    bad = hostile(settings)[name]

    with pytest.raises(ValueError, match="refusing export"):
        publish(settings, [*previous, bad])

    assert exports_file(settings).read_bytes() == before


def test_one_path_exported_to_two_clients_is_refused(settings: Settings):
    export = root_export(settings, TAG_A, "10.0.0.1")

    with pytest.raises(ValueError, match="same path"):
        publish(settings, [export, replace(export, client="10.0.0.2")])

    assert not exports_file(settings).exists()


def test_publishing_the_same_export_twice_exports_it_once(settings: Settings):
    export = root_export(settings, TAG_A, "10.0.0.1")

    publish(settings, [export, export])

    assert exports_file(settings).read_text().count("EXPORT {") == 1


def test_none_backend_writes_nothing_but_still_refuses_hostile_exports(tmp_path: Path):
    settings = Settings(root=tmp_path / "data", nfs_backend="none")

    publish(settings, [root_export(settings, TAG_A, "10.0.0.1")])
    with pytest.raises(ValueError):
        publish(settings, [root_export(settings, TAG_A, "*")])

    assert not tmp_path.joinpath("data").exists()


def test_backends_write_their_default_files_unless_told_otherwise(settings: Settings):
    kernel = replace(settings, nfs_backend="kernel")

    assert make_backend(kernel).exports_file == DEFAULT_KERNEL_EXPORTS_FILE
    assert make_backend(settings).exports_file == exports_file(settings)
    custom = replace(settings, exports_file="/srv/nfs/bakery.conf")
    assert make_backend(custom).exports_file == Path("/srv/nfs/bakery.conf")


# --- atomicity -----------------------------------------------------------------------------------


def test_publish_replaces_the_file_so_an_open_reader_keeps_the_whole_old_version(
    settings: Settings,
):
    publish(settings, [root_export(settings, TAG_A, "10.0.0.1")])
    path = exports_file(settings)
    old_text = path.read_text()

    with open(path) as reader:
        old_inode = os.fstat(reader.fileno()).st_ino
        publish(settings, [root_export(settings, TAG_B, "10.0.0.2")])
        assert reader.read() == old_text

    assert path.stat().st_ino != old_inode
    assert TAG_B in path.read_text() and TAG_A not in path.read_text()
    assert os.listdir(path.parent) == [path.name]


CONCURRENT_WRITERS = 8
PUBLISHES_PER_WRITER = 20


def publish_lists(settings: Settings, writer: int) -> list[list[Export]]:
    """What writer ``writer`` publishes, in order; deterministic so the parent knows it too."""
    rng = random.Random(writer)
    pool = random_exports(settings, random.Random(0), 12)
    return [rng.sample(pool, rng.randint(0, 12)) for _ in range(PUBLISHES_PER_WRITER)]


def publish_all(settings: Settings, writer: int) -> None:
    for exports in publish_lists(settings, writer):
        publish(settings, exports)


def test_concurrent_publishes_from_many_processes_always_leave_a_complete_file(
    settings: Settings,
):
    valid = {
        render_ganesha(validate_exports(settings.root, exports))
        for writer in range(CONCURRENT_WRITERS)
        for exports in publish_lists(settings, writer)
    }
    publish(settings, [])
    context = multiprocessing.get_context("fork")
    writers = [
        context.Process(target=publish_all, args=(settings, writer))
        for writer in range(CONCURRENT_WRITERS)
    ]
    for writer in writers:
        writer.start()
    reads = 0
    try:
        while any(writer.is_alive() for writer in writers):
            assert exports_file(settings).read_text() in valid | {render_ganesha([])}
            reads += 1
    finally:
        for writer in writers:
            writer.join()

    assert [writer.exitcode for writer in writers] == [0] * CONCURRENT_WRITERS
    assert exports_file(settings).read_text() in valid
    assert os.listdir(exports_file(settings).parent) == ["ganesha-exports.conf"]
    assert reads > 0


# --- the kernel server's exportfs ----------------------------------------------------------------

CLONE_NEWNS = 0x00020000


def publish_in_private_mounts(scratch: Path, settings: Settings, exports: list[Export]) -> str:
    """Run in a child: give it its own /etc (an overlay) and /var/lib/nfs, so ``exportfs -ra``
    reads and records our file without touching the host's exports, then return its etab."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS) failed")
    for directory in ("upper", "work", "nfs"):
        scratch.joinpath(directory).mkdir(parents=True)
    overlay = f"lowerdir=/etc,upperdir={scratch}/upper,workdir={scratch}/work"
    for argv in (
        ["mount", "--make-rprivate", "/"],
        ["mount", "-t", "overlay", "overlay", "-o", overlay, "/etc"],
        ["mount", "--bind", str(scratch / "nfs"), "/var/lib/nfs"],
    ):
        subprocess.run(argv, check=True, capture_output=True)
    publish(settings, exports)
    return Path("/var/lib/nfs/etab").read_text()


def exportfs_in_private_mounts(scratch: Path, settings: Settings, exports: list[Export]) -> str:
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as child:
        return child.submit(publish_in_private_mounts, scratch, settings, exports).result()


needs_exportfs = pytest.mark.tools("exportfs")


@pytest.mark.root
@needs_exportfs
def test_exportfs_loads_each_export_for_its_owner_only(settings: Settings, tmp_path: Path):
    settings = replace(settings, nfs_backend="kernel")
    exports = [root_export(settings, TAG_A, "10.0.0.1"), root_export(settings, TAG_B, "fd00::2")]
    for export in exports:
        export.path.mkdir(parents=True)

    etab = exportfs_in_private_mounts(tmp_path / "mounts", settings, exports)

    loaded = dict(re.findall(r"^(\S+)\t(\S+?)\(", etab, re.MULTILINE))
    assert loaded == {str(exports[0].path): "10.0.0.1", str(exports[1].path): "fd00::2"}
    assert "fsid=01234567-89ab-cdef-0123-456789abcdef" in etab
    assert "no_root_squash" in etab


@pytest.mark.root
@needs_exportfs
def test_exportfs_refusal_is_an_export_error_carrying_its_message(
    settings: Settings, tmp_path: Path
):
    settings = replace(settings, nfs_backend="kernel", export_options="rw,bogus_option")
    export = root_export(settings, TAG_A, "10.0.0.1")
    export.path.mkdir(parents=True)

    with pytest.raises(ExportError, match="bogus_option"):
        exportfs_in_private_mounts(tmp_path / "mounts", settings, [export])


# --- nfs-ganesha, for real ------------------------------------------------------------------------

needs_ganesha = pytest.mark.tools(*NFS_LAB_TOOLS)


@dataclass
class NfsLab:
    """A running ganesha serving Bakery's exports file, an owner Pi and a stranger."""

    settings: Settings
    ganesha: Ganesha
    owner: ClientNamespace
    stranger: ClientNamespace
    root: Path

    def cat(self, source_ip: str, relative: str) -> subprocess.CompletedProcess[str]:
        server = self.owner.host_ip
        return nfs_cat(f"{self.root}/{relative}", self.ganesha.port, source_ip, server)

    def ls(self, source_ip: str, relative: str) -> subprocess.CompletedProcess[str]:
        server = self.owner.host_ip
        return nfs_ls(f"{self.root}/{relative}", self.ganesha.port, source_ip, server)

    def reloaded(self, count: int) -> None:
        wait_until(lambda: self.ganesha.reloads() >= count, 20, what=f"{count} ganesha reload(s)")


@pytest.fixture
def nfs_lab(settings: Settings, tmp_path: Path) -> Iterator[NfsLab]:
    baked_root = settings.path("bakes", TAG_A, "root")
    baked_root.joinpath("etc").mkdir(parents=True)
    baked_root.joinpath("etc", "hostname").write_text("pi-1234abcd\n")
    publish(settings, [])
    with client_namespace() as owner, client_namespace() as stranger:
        with running_ganesha(tmp_path / "ganesha", exports_file(settings), owner.host_ip) as server:
            served = replace(settings, ganesha_pid_file=str(server.pid_file))
            yield NfsLab(served, server, owner, stranger, baked_root)


@pytest.mark.root
@needs_ganesha
def test_ganesha_serves_a_published_root_to_its_owner_only(nfs_lab: NfsLab):
    publish(nfs_lab.settings, [Export(nfs_lab.root, nfs_lab.owner.client_ip, "root", TAG_A)])
    nfs_lab.reloaded(1)

    owner = nfs_lab.cat(nfs_lab.owner.client_ip, "etc/hostname")
    stranger = nfs_lab.cat(nfs_lab.stranger.client_ip, "etc/hostname")
    host = nfs_lab.cat(nfs_lab.owner.host_ip, "etc/hostname")

    assert (owner.returncode, owner.stdout) == (0, "pi-1234abcd\n")
    assert stranger.returncode != 0 and "NFS4ERR_NOENT" in stranger.stderr
    assert host.returncode != 0 and "NFS4ERR_NOENT" in host.stderr
    assert nfs_lab.ls(nfs_lab.owner.client_ip, "etc").stdout.split()[-1] == "hostname"


@pytest.mark.root
@needs_ganesha
def test_ganesha_stops_serving_an_export_once_it_is_no_longer_published(nfs_lab: NfsLab):
    publish(nfs_lab.settings, [Export(nfs_lab.root, nfs_lab.owner.client_ip, "root", TAG_A)])
    nfs_lab.reloaded(1)
    assert nfs_lab.cat(nfs_lab.owner.client_ip, "etc/hostname").returncode == 0

    publish(nfs_lab.settings, [])
    nfs_lab.reloaded(2)

    refused = nfs_lab.cat(nfs_lab.owner.client_ip, "etc/hostname")
    assert refused.returncode != 0 and "NFS4ERR_NOENT" in refused.stderr


@pytest.mark.root
@needs_ganesha
def test_ganesha_started_after_publishing_serves_the_file_as_written(
    settings: Settings, tmp_path: Path
):
    baked_root = settings.path("bakes", TAG_A, "root")
    baked_root.joinpath("etc").mkdir(parents=True)
    baked_root.joinpath("etc", "hostname").write_text("pi-1234abcd\n")
    with client_namespace() as owner:
        publish(settings, [Export(baked_root, owner.client_ip, "root", TAG_A)])
        with running_ganesha(tmp_path / "ganesha", exports_file(settings), owner.host_ip) as server:
            read = nfs_cat(
                f"{baked_root}/etc/hostname", server.port, owner.client_ip, owner.host_ip
            )

    assert read.stdout == "pi-1234abcd\n"


# --- reloading ganesha ---------------------------------------------------------------------------


def test_publish_without_a_running_ganesha_only_writes_the_file(settings: Settings):
    settings = replace(settings, ganesha_pid_file=str(settings.path("run", "ganesha.pid")))

    publish(settings, [root_export(settings, TAG_A, "10.0.0.1")])

    assert TAG_A in exports_file(settings).read_text()


def test_a_stale_pid_file_naming_another_program_does_not_get_it_signalled(
    settings: Settings, tmp_path: Path
):
    bystander = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        pid_file = tmp_path / "ganesha.pid"
        pid_file.write_text(f"{bystander.pid}\n")
        publish(replace(settings, ganesha_pid_file=str(pid_file)), [])
    finally:
        bystander.communicate(timeout=10)

    assert bystander.returncode == 0  # it ended at end of input, not from a SIGHUP


def test_a_pid_file_without_a_pid_is_an_export_error(settings: Settings, tmp_path: Path):
    pid_file = tmp_path / "ganesha.pid"
    pid_file.write_text("not a pid\n")

    with pytest.raises(ExportError, match="does not hold a pid"):
        publish(replace(settings, ganesha_pid_file=str(pid_file)), [])
