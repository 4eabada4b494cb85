"""bakery.models: a database made by an older Bakery is brought up to date at start."""

from __future__ import annotations

import peewee as pw
from playhouse import migrate

from bakery import models
from bakery.models import ApiToken, Bake, Disk, SchemaVersion

LATEST = 1 + len(models.MIGRATIONS)


def as_version_4(migrator: migrate.SchemaMigrator) -> list:
    """What version 5 added, taken away again (the copies and jobs tables beside)."""
    models.database.drop_tables([models.BakeformCopy, models.Job])
    return [
        migrator.drop_column("disk", "host"),
        migrator.drop_column("snapshot", "host"),
        migrator.drop_column("bakeform", "source_host"),
        migrator.drop_column("host", "url"),
        migrator.drop_column("host", "nfs_server"),
    ]


def as_version_3(migrator: migrate.SchemaMigrator) -> list:
    """What version 4 added, taken away again (the hosts table is dropped beside)."""
    steps = as_version_4(migrator)
    migrate.migrate(*steps)
    models.database.drop_tables([models.Host])
    return [migrator.drop_index("pi", "pi_host"), migrator.drop_column("pi", "host")]


def as_version_2(migrator: migrate.SchemaMigrator) -> list:
    """What version 3 added, taken away again."""
    return [
        *as_version_3(migrator),
        migrator.drop_column("disk", "filesystem"),
        migrator.drop_column("disk", "mount_point"),
        migrator.drop_column("pi", "boot_protocol"),
        migrator.drop_column("bake", "boot_protocol"),
        *(
            migrator.drop_column("pi", name)
            for name in ("powered_on_at", "up_at", "last_seen", "stalled_at")
        ),
    ]


def as_version_1(migrator: migrate.SchemaMigrator) -> list:
    return [
        *as_version_2(migrator),
        *(migrator.drop_index(table, f"{table}_owner") for table in models.INDEXED_OWNERS),
        *(migrator.drop_column(table, "owner") for table in models.OWNED_TABLES),
        migrator.drop_column("event", "actor"),
        migrator.drop_column("bake", "secret_hash"),
        migrator.drop_column("apitoken", "configured"),
    ]


def open_old_database(tmp_path, version: int, downgrade, *rows: str) -> None:
    """A database as Bakery at schema ``version`` left it: today's, with the columns of
    later versions dropped and the version row put back, holding the ``rows`` (INSERTs
    in that version's columns)."""
    models.connect(f"sqlite:///{tmp_path / 'old.db'}")
    models.create_schema()
    with models.database.connection_context():
        migrate.migrate(*downgrade(migrate.SchemaMigrator.from_database(models.database.obj)))
        SchemaVersion.delete().execute()
        SchemaVersion.create(version=version)
        for row in rows:
            models.database.execute_sql(row)


def test_a_version_1_database_gains_owners_actors_and_bake_secrets(tmp_path):
    open_old_database(
        tmp_path,
        1,
        as_version_1,
        (
            "INSERT INTO apitoken (name, token_hash, prefix, role, created_at) "
            "VALUES ('director', 'h1', 'p', 'configured', '2026-01-01'), "
            "('alice', 'h2', 'p', 'admin', '2026-01-01')"
        ),
    )

    models.create_schema()

    with models.database.connection_context():
        columns = {c.name for c in models.database.get_columns("bake")}
        assert {"owner", "secret_hash"} <= columns
        assert "bake_owner" in {i.name for i in models.database.get_indexes("bake")}
        assert SchemaVersion.select(pw.fn.MAX(SchemaVersion.version)).scalar() == LATEST
        director, alice = ApiToken.get(name="director"), ApiToken.get(name="alice")
        assert (director.role, director.configured, director.owner) == ("cpi", True, "director")
        assert (alice.role, alice.configured, alice.owner) == ("admin", False, "alice")
        assert Bake.select().count() == 0
    models.database.close()


def test_a_version_2_database_keeps_its_disks_and_gains_filesystems_and_mount_points(tmp_path):
    open_old_database(
        tmp_path,
        2,
        as_version_2,
        (
            "INSERT INTO disk (id, size_mib, ephemeral, metadata, owner, created_at) "
            "VALUES ('d1', 64, 0, '{}', 'alice', '2026-01-01')"
        ),
    )

    models.create_schema()

    with models.database.connection_context():
        disk = Disk.get_by_id("d1")
        assert (disk.size_mib, disk.owner) == (64, "alice")
        assert (disk.filesystem, disk.mount_point) == (None, None)
        assert SchemaVersion.select(pw.fn.MAX(SchemaVersion.version)).scalar() == LATEST
    models.database.close()


def test_a_version_3_database_keeps_its_pis_and_gains_hosts(tmp_path):
    open_old_database(
        tmp_path,
        3,
        as_version_3,
        (
            "INSERT INTO pi (serial, model, state, broken_reason, power_driver, power_settings,"
            " power_state, labels, boot_protocol, created_at, updated_at) VALUES ('00000001',"
            " '4B', 'available', '', 'manual', '{}', 'off', '[]', 'tftp', '2026-01-01',"
            " '2026-01-01')"
        ),
    )

    models.create_schema()

    with models.database.connection_context():
        pi = models.Pi.get(models.Pi.serial == "00000001")
        assert (pi.model, pi.host) == ("4B", None)
        assert models.database.table_exists("host")
        assert "pi_host" in {i.name for i in models.database.get_indexes("pi")}
        assert SchemaVersion.select(pw.fn.MAX(SchemaVersion.version)).scalar() == LATEST
    models.database.close()


def test_a_version_4_database_keeps_its_disks_and_hosts_and_gains_where_things_are(tmp_path):
    open_old_database(
        tmp_path,
        4,
        as_version_4,
        (
            "INSERT INTO disk (id, size_mib, ephemeral, metadata, owner, created_at) VALUES"
            " ('d1', 16, 0, '{}', '', '2026-01-01')"
        ),
        (
            "INSERT INTO host (name, instance, machine, pid, data_dir, data_bytes,"
            " data_free_bytes, started_at, heartbeat_at, stopped) VALUES ('rack-1', 'x',"
            " 'm', 1, '/d', 0, 0, '2026-01-01', '2026-01-01', 1)"
        ),
    )

    models.create_schema()

    with models.database.connection_context():
        assert Disk.get_by_id("d1").host == "rack-1"  # the one host there was made it
        assert models.Host.get(models.Host.name == "rack-1").url == ""
        assert models.database.table_exists("job")
        assert models.database.table_exists("bakeformcopy")
        assert SchemaVersion.select(pw.fn.MAX(SchemaVersion.version)).scalar() == LATEST
    models.database.close()
