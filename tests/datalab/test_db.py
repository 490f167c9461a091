"""The database schema: the Alembic migrations build what the models describe, an older database
is upgraded, and an up-to-date database is recognised without loading Alembic."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import Engine
from tests.postgres import PostgresServer

from datalab.db import MIGRATIONS_DIR, SCHEMA_REVISION, Base, Database, schema_revision


def _alembic(engine: Engine, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def _schema(engine: Engine) -> dict[str, Any]:
    schema = inspect(engine)
    return {
        table: {
            "columns": sorted(
                (c["name"], str(c["type"]), c["nullable"]) for c in schema.get_columns(table)
            ),
            "indexes": sorted(
                (tuple(i["column_names"]), bool(i["unique"])) for i in schema.get_indexes(table)
            ),
            "unique": sorted(
                tuple(u["column_names"]) for u in schema.get_unique_constraints(table)
            ),
            "foreign_keys": sorted(
                (tuple(f["constrained_columns"]), f["referred_table"], f["options"].get("ondelete"))
                for f in schema.get_foreign_keys(table)
            ),
            "primary_key": schema.get_pk_constraint(table)["constrained_columns"],
        }
        for table in schema.get_table_names()
    }


def run_python(script: str) -> subprocess.CompletedProcess[str]:
    """``script`` in a new interpreter (to see which modules a step loads)."""
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )


def run_without_alembic(code: str) -> None:
    """``code`` succeeds in a new interpreter without loading Alembic (which would stay
    resident in the server for nothing)."""
    done = run_python(f"import sys; {code}; assert 'alembic' not in sys.modules, 'alembic loaded'")
    assert done.returncode == 0, done.stderr


def test_schema_revision_is_alembics_head() -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert ScriptDirectory.from_config(config).get_heads() == [SCHEMA_REVISION]


def test_the_migrations_build_what_the_models_describe(tmp_path: Path) -> None:
    from_models = create_engine(f"sqlite:///{tmp_path / 'models.db'}")
    Base.metadata.create_all(from_models)
    database = Database(f"sqlite:///{tmp_path / 'migrations.db'}")
    database.migrate()
    migrated = _schema(database.engine)
    assert migrated.pop("alembic_version")
    assert _schema(from_models) == migrated
    assert {"users", "api_tokens", "projects", "services", "audit_log", "saved_configs"} <= set(
        migrated
    )


def test_an_older_database_is_upgraded_then_recognised_without_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'datalab.db'}"
    engine = create_engine(url)
    _alembic(engine, "0004")  # a database of an earlier release
    assert "git_token" not in {c["name"] for c in inspect(engine).get_columns("users")}
    engine.dispose()
    database = Database(url)
    database.migrate()
    assert schema_revision(database.engine) == SCHEMA_REVISION
    assert "git_token" in {c["name"] for c in inspect(database.engine).get_columns("users")}
    database.dispose()
    # up to date: the next start neither migrates nor loads Alembic
    run_without_alembic(f"from datalab.db import Database; Database({url!r}).migrate()")


def test_datalab_up_migrates_in_a_child_process(tmp_path: Path) -> None:
    """`datalab up` brings the schema up to date in a child, so Alembic never stays resident
    in the server; a database that cannot be migrated is a clear error."""
    url = f"sqlite:///{tmp_path / 'datalab.db'}"
    run_without_alembic(
        "from datalab.cli.server import _migrate_in_a_child_process; "
        f"_migrate_in_a_child_process({url!r})"
    )
    assert schema_revision(create_engine(url)) == SCHEMA_REVISION
    (tmp_path / "directory.db").mkdir()
    broken = f"sqlite:///{tmp_path / 'directory.db'}"
    script = (
        "from datalab.cli.server import _migrate_in_a_child_process; "
        f"_migrate_in_a_child_process({broken!r})"
    )
    done = run_python(script)
    assert done.returncode != 0
    # found before Alembic runs: the database is named, the driver says why
    assert "error: cannot reach the database sqlite:///" in done.stderr
    assert "unable to open database file" in done.stderr and "Traceback" not in done.stderr


def test_on_postgresql_the_migrations_build_what_the_models_describe(
    postgres_server: PostgresServer,
) -> None:
    """PostgreSQL, the production database (Debian's server, tests/postgres.py): the migrations
    (run by `datalab up` in its child process) build the models' schema there too, with the
    audit log's append-only trigger. `make test` also runs the API tests on it (--database)."""
    url = postgres_server.new_database()
    run_without_alembic(
        "from datalab.cli.server import _migrate_in_a_child_process; "
        f"_migrate_in_a_child_process({url!r})"
    )
    migrated_engine = create_engine(url)
    assert schema_revision(migrated_engine) == SCHEMA_REVISION
    migrated = _schema(migrated_engine)
    assert migrated.pop("alembic_version")
    from_models = create_engine(postgres_server.new_database())
    Base.metadata.create_all(from_models)
    assert _schema(from_models) == migrated
    with migrated_engine.connect() as connection:
        triggers = connection.exec_driver_sql(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = 'audit_log'::regclass"
        ).scalars()
        assert "audit_log_append_only" in set(triggers)
    for engine in (migrated_engine, from_models):
        engine.dispose()
