"""The data model: Pis, bakeforms, bakes, disks, events and API tokens.

Models are plain declarations bound late to a database chosen by URL (SQLite by
default, PostgreSQL for several workers or hosts). Orchestration lives in
the ``fleet`` package; this module holds data and the invariants a row can check alone.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import json
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import peewee as pw
from playhouse import db_url, migrate

database = pw.DatabaseProxy()

#: Seconds SQLite waits for a lock before giving up: long enough for a clone or a
#: burst of concurrent bakes from several workers, short enough to report a stuck DB.
SQLITE_BUSY_TIMEOUT_MS = 30_000


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


#: A Pi's model before anyone (operator, bootloader, the files it asks for) said it.
UNKNOWN_MODEL = "unknown"
#: How a Pi fetches its boot files: file by file over TFTP (every model), or one signed
#: boot.img over HTTP (Pi 4 and Pi 5 bootloaders, EEPROM boot mode 7).
BOOT_PROTOCOLS = ("tftp", "http")


class PiState(enum.StrEnum):
    DISCOVERED = "discovered"
    AVAILABLE = "available"
    PREPARING = "preparing"
    BAKED = "baked"
    UNBAKING = "unbaking"
    BROKEN = "broken"


class BakeState(enum.StrEnum):
    PREPARING = "preparing"
    BAKED = "baked"
    UNBAKING = "unbaking"
    UNBAKED = "unbaked"
    FAILED = "failed"


LIVE_BAKE_STATES = (BakeState.PREPARING.value, BakeState.BAKED.value, BakeState.UNBAKING.value)


class JSONField(pw.TextField):
    """JSON stored as text: the same on SQLite and PostgreSQL."""

    def db_value(self, value: Any) -> str | None:
        return None if value is None else json.dumps(value, sort_keys=True)

    def python_value(self, value: str | None) -> Any:
        return None if value is None else json.loads(value)


class BaseModel(pw.Model):
    class Meta:
        database = database

    if TYPE_CHECKING:
        # types-peewee declares Model.delete as a Self-typed instance variable, which mypy
        # refuses to read through the class; this is what it is at runtime.
        @classmethod
        def delete(cls) -> pw.ModelDelete: ...


class Pi(BaseModel):
    id = pw.AutoField()
    serial = pw.CharField(max_length=8, unique=True)
    mac = pw.CharField(max_length=17, null=True, unique=True)
    model = pw.CharField(max_length=16, default=UNKNOWN_MODEL)
    state = pw.CharField(max_length=16, default=PiState.AVAILABLE.value, index=True)
    broken_reason = pw.TextField(default="")
    power_driver = pw.CharField(max_length=32, default="manual")
    power_settings = JSONField(default=dict)
    #: What the power layer last knew: on, off or unknown.
    power_state = pw.CharField(max_length=8, default="unknown")
    last_ip = pw.CharField(max_length=45, null=True)
    labels = JSONField(default=list)
    #: What its EEPROM is set to boot over (one of BOOT_PROTOCOLS): its bakes' default.
    boot_protocol = pw.CharField(max_length=8, default="tftp")
    #: Its boot, as far as Bakery knows: when it was last powered on, when its userspace
    #: said it was up (after that power-on if this boot got that far), when it last said
    #: anything, and when it was found past its deadline without saying so.
    powered_on_at = pw.DateTimeField(null=True)
    up_at = pw.DateTimeField(null=True)
    last_seen = pw.DateTimeField(null=True)
    stalled_at = pw.DateTimeField(null=True)
    #: The live bake on this Pi, if any (a plain id, not a foreign key, to avoid a cycle).
    bake_id = pw.CharField(max_length=32, null=True)
    #: The Bakery host whose TFTP, NFS and power devices serve it (``Host.name``); None
    #: until a host registers it or sees it boot.
    host = pw.CharField(max_length=255, null=True, index=True)
    created_at = pw.DateTimeField(default=utcnow)
    updated_at = pw.DateTimeField(default=utcnow)


class Bakeform(BaseModel):
    id = pw.AutoField()
    name = pw.CharField(max_length=64, unique=True)
    sha256 = pw.CharField(max_length=64)
    #: Bytes received (the upload, compressed or not).
    size = pw.BigIntegerField()
    #: Bytes of the raw image after decompression.
    image_size = pw.BigIntegerField()
    compression = pw.CharField(max_length=8)
    #: How each bake's root is cloned from this bakeform's root: snapshot, reflink or copy.
    clone_method = pw.CharField(max_length=16, default="copy")
    #: The image's own cmdline.txt as imported, for users to see; each boot renders the
    #: NFS one from the cmdline.txt in the bake's own boot files.
    cmdline = pw.TextField(default="")
    metadata = JSONField(default=dict)
    #: The owner of the token that imported it ("" for one made by Bakery itself).
    owner = pw.CharField(max_length=64, default="")
    #: The host that imported it and keeps its upload for the other hosts to copy (None:
    #: imported before hosts shared bakeforms; only its own host has it).
    source_host = pw.CharField(max_length=255, null=True)
    created_at = pw.DateTimeField(default=utcnow)


class BakeformCopy(BaseModel):
    """A host's extracted copy of a bakeform (``fleet.copies``): a bake on a host clones
    its root from that host's copy, made from the same upload (same ``sha256``)."""

    id = pw.AutoField()
    bakeform = pw.ForeignKeyField(Bakeform, backref="copies", on_delete="CASCADE")
    host = pw.CharField(max_length=255)
    #: The upload this copy was made from: a copy of an older upload is stale.
    sha256 = pw.CharField(max_length=64)
    #: copying, ready or failed (with the reason in ``error``).
    state = pw.CharField(max_length=8)
    #: How this host clones bake roots from its copy (its own data dir's way).
    clone_method = pw.CharField(max_length=16, default="copy")
    error = pw.TextField(default="")
    updated_at = pw.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("bakeform", "host"), True),)


class Bake(BaseModel):
    id = pw.CharField(max_length=32, primary_key=True)
    pi = pw.ForeignKeyField(Pi, backref="bakes", on_delete="CASCADE")
    pi_id: int
    bakeform = pw.ForeignKeyField(Bakeform, backref="bakes", null=True, on_delete="SET NULL")
    bakeform_name = pw.CharField(max_length=64)
    state = pw.CharField(max_length=16, default=BakeState.PREPARING.value, index=True)
    #: The last step a bake reached (claimed, cloned, seasoned, exported, powering_on,
    #: powered_on): what a rollback after a crash has to undo.
    step = pw.CharField(max_length=16, default="claimed")
    hostname = pw.CharField(max_length=63)
    #: The host that runs this bake's steps; only it recovers the bake after a crash.
    host_id = pw.CharField(max_length=255)
    agent_settings = JSONField(null=True)
    metadata = JSONField(default=dict)
    error = pw.TextField(default="")
    #: The owner of the token that baked it: only that owner (or an admin) sees it.
    owner = pw.CharField(max_length=64, default="", index=True)
    #: sha256 of the secret written into the bake's root: what the Pi shows to ask
    #: Bakery about itself, which no other host on the Pi LAN can read.
    secret_hash = pw.CharField(max_length=64, default="")
    #: Whether Bakery serves this bake's Pi a signed boot.img over HTTP besides TFTP.
    boot_protocol = pw.CharField(max_length=8, default="tftp")
    created_at = pw.DateTimeField(default=utcnow)
    finished_at = pw.DateTimeField(null=True)


class Disk(BaseModel):
    id = pw.CharField(max_length=32, primary_key=True)
    size_mib = pw.IntegerField()
    bake = pw.ForeignKeyField(Bake, backref="disks", null=True, on_delete="SET NULL")
    bake_id: str | None
    #: Created together with a bake (an ephemeral disk): deleted when the bake is unbaked.
    ephemeral = pw.BooleanField(default=False)
    metadata = JSONField(default=dict)
    owner = pw.CharField(max_length=64, default="", index=True)
    created_at = pw.DateTimeField(default=utcnow)
    #: The filesystem Bakery made on it at creation (``ext4``), or None for a raw disk that
    #: its user (the BOSH agent) partitions and formats.
    filesystem = pw.CharField(max_length=16, null=True)
    #: Where the disk agent mounts it on its Pi at boot, or None to leave it a device.
    mount_point = pw.CharField(max_length=255, null=True)
    #: The host whose data dir holds its image (None: made before hosts; this one's).
    host = pw.CharField(max_length=255, null=True)


class Snapshot(BaseModel):
    id = pw.CharField(max_length=32, primary_key=True)
    #: The disk it was taken of; kept as a plain id so snapshots outlive their disk.
    disk_id = pw.CharField(max_length=32, index=True)
    size_mib = pw.IntegerField()
    metadata = JSONField(default=dict)
    owner = pw.CharField(max_length=64, default="", index=True)
    created_at = pw.DateTimeField(default=utcnow)
    #: The host whose data dir holds it (None: made before hosts; this one's).
    host = pw.CharField(max_length=255, null=True)


class Event(BaseModel):
    id = pw.AutoField()
    pi = pw.ForeignKeyField(Pi, backref="events", null=True, on_delete="CASCADE")
    bake_id = pw.CharField(max_length=32, null=True, index=True)
    #: state, power, bake, disk, boot, dhcp, tftp ...
    kind = pw.CharField(max_length=16)
    message = pw.TextField()
    data = JSONField(default=dict)
    #: The API token whose request did it ("" for Bakery itself: netboot, recovery).
    actor = pw.CharField(max_length=64, default="")
    created_at = pw.DateTimeField(default=utcnow, index=True)
    #: Not stored: seconds since the power-on its boot began with, set by the timeline.
    since_power_on: float | None = None


class ConsoleLine(BaseModel):
    """A line of a Pi's bootloader log, as its bootloader sent it over UDP (NETCONSOLE)."""

    id = pw.AutoField()
    pi = pw.ForeignKeyField(Pi, backref="console", on_delete="CASCADE")
    line = pw.TextField()
    created_at = pw.DateTimeField(default=utcnow)


class ApiToken(BaseModel):
    id = pw.AutoField()
    name = pw.CharField(max_length=64, unique=True)
    #: sha256 of the token: tokens are long random strings, so a fast hash is enough.
    token_hash = pw.CharField(max_length=64, unique=True)
    #: The first characters of the token, to tell tokens apart in listings.
    prefix = pw.CharField(max_length=12)
    #: admin, operator, cpi, viewer or host (identifiers.ROLES): what the token may call.
    role = pw.CharField(max_length=16, default="viewer")
    #: Whose bakes, disks and bakeforms the token makes and sees (Ironic's owner).
    owner = pw.CharField(max_length=64, default="")
    #: Whether this token came from the settings (and goes when it leaves them).
    configured = pw.BooleanField(default=False)
    created_at = pw.DateTimeField(default=utcnow)
    last_used_at = pw.DateTimeField(null=True)


class Host(BaseModel):
    """A Bakery host sharing this database, kept alive by its heartbeat (``fleet.hosts``)."""

    id = pw.AutoField()
    #: Its ``host_id`` setting: one live process per name.
    name = pw.CharField(max_length=255, unique=True)
    #: The process now serving under the name: a random id, its machine and pid.
    instance = pw.CharField(max_length=32)
    machine = pw.CharField(max_length=255)
    pid = pw.IntegerField()
    data_dir = pw.TextField()
    #: Where the other hosts reach its API (``Settings.url_for_hosts``), and where its
    #: Pis reach its NFS server: what any host's API says a bake's exports are.
    url = pw.CharField(max_length=255, default="")
    nfs_server = pw.CharField(max_length=255, default="")
    data_bytes = pw.BigIntegerField(default=0)
    data_free_bytes = pw.BigIntegerField(default=0)
    started_at = pw.DateTimeField(default=utcnow)
    heartbeat_at = pw.DateTimeField(default=utcnow)
    #: Set when the process stopped cleanly: the name is free at once.
    stopped = pw.BooleanField(default=False)


class Job(BaseModel):
    """A request for work on another host's Pis, disks or files (``fleet.jobs``): written
    by the API host that took the request, done by the host it names, which writes the
    result (or the error) back for the waiting request."""

    id = pw.AutoField()
    host = pw.CharField(max_length=255, index=True)
    #: What to run: a key of ``fleet.forwarding.WORK``, never a user's value.
    kind = pw.CharField(max_length=32)
    #: The call's arguments; emptied when the job ends (they may hold user-data).
    args = JSONField(default=dict)
    #: Who asked (the token's name, role and owner): the work is done for them.
    actor = JSONField(null=True)
    #: pending, running, done, failed or cancelled (the asker stopped waiting first).
    state = pw.CharField(max_length=10, default="pending", index=True)
    result = JSONField(null=True)
    #: A failure as the asker re-raises it: status, code, message, details.
    error = JSONField(null=True)
    #: Until when the running job is known to be alive: its runner's process renews it.
    lease_until = pw.DateTimeField(null=True)
    created_at = pw.DateTimeField(default=utcnow)
    #: Past it, a pending job is not started any more (its asker has given up).
    start_by = pw.DateTimeField()
    finished_at = pw.DateTimeField(null=True)


class SchemaVersion(BaseModel):
    id = pw.AutoField()
    version = pw.IntegerField()


MODELS = [
    Pi,
    Bakeform,
    BakeformCopy,
    Bake,
    Disk,
    Snapshot,
    Event,
    ConsoleLine,
    ApiToken,
    Host,
    Job,
    SchemaVersion,
]


run_migration: Callable[..., None] = migrate.migrate  # playhouse.migrate ships no types


def _owners_actors_and_bake_secrets(migrator: migrate.SchemaMigrator) -> None:
    """Version 2: who owns bakes, disks, bakeforms and snapshots, what a token may do
    and for whom, which token each event came from, and the secret a baked Pi shows."""

    def owner() -> pw.CharField:
        return pw.CharField(max_length=64, default="")

    steps = [
        *(migrator.add_column(table, "owner", owner()) for table in OWNED_TABLES),
        migrator.add_column("event", "actor", owner()),
        migrator.add_column("bake", "secret_hash", pw.CharField(max_length=64, default="")),
        migrator.add_column("apitoken", "configured", pw.BooleanField(default=False)),
    ]
    run_migration(*steps)
    # Tokens from before roles were all admins, and settings tokens said so by role.
    ApiToken.update(configured=True, role="cpi").where(ApiToken.role == "configured").execute()
    ApiToken.update(owner=ApiToken.name).where(ApiToken.owner == "").execute()


def _disk_filesystems_and_boot_protocols(migrator: migrate.SchemaMigrator) -> None:
    """Version 3: disks formatted by Bakery and mounted by the disk agent; Pis and bakes
    that boot over HTTP; boots that say when their userspace is up."""

    def protocol() -> pw.CharField:
        return pw.CharField(max_length=8, default="tftp")

    run_migration(
        migrator.add_column("disk", "filesystem", pw.CharField(max_length=16, null=True)),
        migrator.add_column("disk", "mount_point", pw.CharField(max_length=255, null=True)),
        migrator.add_column("pi", "boot_protocol", protocol()),
        migrator.add_column("bake", "boot_protocol", protocol()),
        *(
            migrator.add_column("pi", name, pw.DateTimeField(null=True))
            for name in ("powered_on_at", "up_at", "last_seen", "stalled_at")
        ),
    )


def _hosts(migrator: migrate.SchemaMigrator) -> None:
    """Version 4: the host each Pi belongs to (the hosts table is new: made after)."""
    run_migration(migrator.add_column("pi", "host", pw.CharField(max_length=255, null=True)))


def _hosts_hold_disks_and_copies(migrator: migrate.SchemaMigrator) -> None:
    """Version 5: the host holding each disk and snapshot, the host that imported each
    bakeform, where each host's API is (the copies and jobs tables are new: made after)."""

    def host() -> pw.CharField:
        return pw.CharField(max_length=255, null=True)

    steps = [
        migrator.add_column("disk", "host", host()),
        migrator.add_column("snapshot", "host", host()),
        migrator.add_column("bakeform", "source_host", host()),
    ]
    hosts: list[str] = []
    if database.table_exists("host"):  # not before version 4 (it comes whole after)
        steps += [
            migrator.add_column("host", name, pw.CharField(max_length=255, default=""))
            for name in ("url", "nfs_server")
        ]
        hosts = [name for (name,) in database.execute_sql("SELECT name FROM host").fetchall()]
    run_migration(*steps)
    if len(hosts) == 1:  # one host made them all: say so, as for those made from now on
        Disk.update(host=hosts[0]).where(Disk.host.is_null()).execute()
        Snapshot.update(host=hosts[0]).where(Snapshot.host.is_null()).execute()
        Bakeform.update(source_host=hosts[0]).where(Bakeform.source_host.is_null()).execute()


OWNED_TABLES = ("apitoken", "bakeform", "bake", "disk", "snapshot")
#: Where lists are narrowed by owner.
INDEXED_OWNERS = ("bake", "disk", "snapshot")

#: Schema changes after version 1, in order: each takes a playhouse migrator.
#: Append a function here (never edit an old one) when a model gains a column.
MIGRATIONS: list[Callable[[migrate.SchemaMigrator], None]] = [
    _owners_actors_and_bake_secrets,
    _disk_filesystems_and_boot_protocols,
    _hosts,
    _hosts_hold_disks_and_copies,
]


def _keep_private(path: str) -> None:
    """The SQLite file (and its WAL, which SQLite makes with the file's mode) holds agent
    settings with mbus passwords and power settings: 0600, made so before it has any."""
    if path == ":memory:" or path.startswith("file:"):
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(path + suffix, 0o600)


def connect(url: str) -> pw.Database:
    """Bind the models to the database at ``url`` and return it (not yet connected).

    SQLite gets WAL (readers never wait for the writer), a busy timeout (writers
    from several gunicorn workers queue instead of failing) and foreign keys."""
    # playhouse.db_url ships no type information: say what it returns.
    open_url: Callable[..., pw.Database] = db_url.connect
    if url.startswith("sqlite"):
        db = open_url(
            url,
            pragmas={
                "journal_mode": "wal",
                "busy_timeout": SQLITE_BUSY_TIMEOUT_MS,
                "foreign_keys": 1,
                "synchronous": "normal",
            },
            timeout=SQLITE_BUSY_TIMEOUT_MS / 1000,
        )
        _keep_private(db.database)
    else:
        db = open_url(url)
    database.initialize(db)
    # peewee logs every statement with its parameters at DEBUG: agent settings, power
    # settings and token hashes would reach the log of a service run at DEBUG.
    logging.getLogger("peewee").setLevel(logging.INFO)
    return db


def shared_database() -> bool:
    """Whether several hosts may share this database (PostgreSQL); SQLite is one host's."""
    return isinstance(database.obj, pw.PostgresqlDatabase)


def write_transaction() -> pw._atomic:
    """A transaction for read-then-write work.

    On SQLite it takes the write lock at BEGIN (IMMEDIATE): a deferred transaction
    that reads first fails at once, without waiting, when another worker wrote in
    between. PostgreSQL's row locks need no such help."""
    if isinstance(database.obj, pw.SqliteDatabase):
        return database.atomic("IMMEDIATE")
    return database.atomic()


#: The PostgreSQL advisory lock that one host at a time holds while it changes the schema.
SCHEMA_LOCK_KEY = 0x42414B45


def _schema_is_current() -> bool:
    """Whether every table is there at the latest version: then nothing is locked. (A
    ``CREATE INDEX IF NOT EXISTS`` still locks its table: on a database other hosts are
    serving from, every process start would wait on, and deadlock with, their writes.)"""
    if not database.table_exists("schemaversion"):
        return False
    current = SchemaVersion.select(pw.fn.MAX(SchemaVersion.version)).scalar() or 1
    tables = set(database.get_tables())
    return current == 1 + len(MIGRATIONS) and all(m._meta.table_name in tables for m in MODELS)


def create_schema() -> None:
    """Create missing tables and run pending migrations; safe on every start.

    An existing database is migrated first and its tables completed after (new tables,
    and the indexes of columns a migration added); a new one is made whole at once."""
    with database.connection_context():
        if _schema_is_current():
            return
        with database.atomic():
            if isinstance(database.obj, pw.PostgresqlDatabase):  # hosts starting together
                database.execute_sql("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
            if not database.table_exists("schemaversion"):
                database.create_tables(MODELS, safe=True)
                SchemaVersion.create(version=1 + len(MIGRATIONS))
                return
            current = SchemaVersion.select(pw.fn.MAX(SchemaVersion.version)).scalar() or 1
            # playhouse.migrate ships no type information either.
            from_database: Callable[[pw.Database], migrate.SchemaMigrator] = (
                migrate.SchemaMigrator.from_database
            )
            migrator = from_database(database.obj)
            for number, step in enumerate(MIGRATIONS, start=2):
                if number > current:
                    step(migrator)
                    SchemaVersion.create(version=number)
            database.create_tables(MODELS, safe=True)
