"""``datalab migrate``, the command the platform's chart runs in a Job before installs and
upgrades: it brings SQLite and a real PostgreSQL to the current schema, says when there was
nothing to do, and a database it cannot reach gets one line naming it, without its password."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import create_engine
from tests.postgres import PostgresServer

from datalab.db import SCHEMA_REVISION, schema_revision


def _migrate(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DATALAB_")}
    return subprocess.run(
        [sys.executable, "-m", "datalab", "migrate"],
        cwd=tmp_path,  # no datalab.yaml there
        env={**clean, "DATALAB_DATA_DIR": str(tmp_path / "data"), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _revision(url: str) -> str | None:
    engine = create_engine(url)
    try:
        return schema_revision(engine)
    finally:
        engine.dispose()


def test_migrate_brings_sqlite_to_the_current_schema_once(tmp_path: Path) -> None:
    first = _migrate(tmp_path)
    assert first.returncode == 0, first.stderr
    assert f"from an empty database to {SCHEMA_REVISION}" in first.stdout
    assert _revision(f"sqlite:///{tmp_path / 'data' / 'datalab.db'}") == SCHEMA_REVISION
    again = _migrate(tmp_path)
    assert again.returncode == 0, again.stderr
    assert f"the schema is current ({SCHEMA_REVISION})" in again.stdout


def test_migrate_brings_postgresql_to_the_current_schema(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    url = postgres_server.new_database()
    done = _migrate(tmp_path, DATALAB_DATABASE_URL=url)
    assert done.returncode == 0, done.stderr
    assert _revision(url) == SCHEMA_REVISION
    assert postgres_server.password not in done.stdout + done.stderr
    assert "***" in done.stdout  # the URL is named, its password masked


def test_a_database_it_cannot_reach_gets_one_clear_line(tmp_path: Path) -> None:
    done = _migrate(
        tmp_path, DATALAB_DATABASE_URL="postgresql+psycopg://datalab:hunter2-pw@127.0.0.1:9/x"
    )
    assert done.returncode == 1
    assert "cannot reach the database postgresql+psycopg://datalab:***@127.0.0.1:9/x" in done.stderr
    assert "hunter2-pw" not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr
