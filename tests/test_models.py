"""bakery.models: a database made by an older Bakery is brought up to date at start."""

from __future__ import annotations

import peewee as pw
from playhouse import migrate

from bakery import models
from bakery.models import ApiToken, Bake, SchemaVersion


def test_a_version_1_database_gains_owners_actors_and_bake_secrets(tmp_path):
    models.connect(f"sqlite:///{tmp_path / 'old.db'}")
    models.create_schema()
    with models.database.connection_context():
        migrator = migrate.SchemaMigrator.from_database(models.database.obj)
        migrate.migrate(
            *(migrator.drop_index(table, f"{table}_owner") for table in models.INDEXED_OWNERS),
            *(migrator.drop_column(table, "owner") for table in models.OWNED_TABLES),
            migrator.drop_column("event", "actor"),
            migrator.drop_column("bake", "secret_hash"),
            migrator.drop_column("apitoken", "configured"),
        )
        SchemaVersion.delete().execute()
        SchemaVersion.create(version=1)
        models.database.execute_sql(
            "INSERT INTO apitoken (name, token_hash, prefix, role, created_at) "
            "VALUES ('director', 'h1', 'p', 'configured', '2026-01-01'), "
            "('alice', 'h2', 'p', 'admin', '2026-01-01')"
        )

    models.create_schema()

    with models.database.connection_context():
        columns = {c.name for c in models.database.get_columns("bake")}
        assert {"owner", "secret_hash"} <= columns
        assert "bake_owner" in {i.name for i in models.database.get_indexes("bake")}
        assert SchemaVersion.select(pw.fn.MAX(SchemaVersion.version)).scalar() == 2
        director, alice = ApiToken.get(name="director"), ApiToken.get(name="alice")
        assert (director.role, director.configured, director.owner) == ("cpi", True, "director")
        assert (alice.role, alice.configured, alice.owner) == ("admin", False, "alice")
        assert Bake.select().count() == 0
    models.database.close()
