"""The database schema: Alembic migrations from empty to head, and the fast path that
recognises an up-to-date database without loading Alembic."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from datalab.db import MIGRATIONS_DIR, SCHEMA_REVISION, Database, schema_revision


def test_schema_revision_is_alembics_head() -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert ScriptDirectory.from_config(config).get_heads() == [SCHEMA_REVISION]


def test_migrations_create_every_table_then_are_skipped(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'datalab.db'}"
    database = Database(url)
    assert schema_revision(database.engine) is None
    database.migrate()
    assert schema_revision(database.engine) == SCHEMA_REVISION
    tables = set(inspect(database.engine).get_table_names())
    assert {"users", "api_tokens", "projects", "services", "audit_log"} <= tables
    columns = {c["name"] for c in inspect(database.engine).get_columns("users")}
    assert "git_token" in columns
    database.dispose()
    # a second start: the database is recognised as up to date, Alembic is not loaded
    script = (
        "import sys; from datalab.db import Database; "
        f"Database({url!r}).migrate(); "
        "assert 'alembic' not in sys.modules, 'alembic loaded'"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
