"""Fixtures shared by every test."""

from __future__ import annotations

import pytest

# The real Kubernetes control plane and PostgreSQL server, one per session for every test that
# asks for them (imported here, not in test modules: each module importing them would start its
# own).
from tests.kube.testenv import kube_cluster
from tests.postgres import PostgresServer, postgres_server

__all__ = ["kube_cluster", "postgres_server"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--database",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="the platform's database in the tests that use the `settings` fixture: SQLite (a "
        "file per test) or a database per test on a real PostgreSQL server (tests/postgres.py)",
    )


@pytest.fixture
def database_url(request: pytest.FixtureRequest) -> str | None:
    """The platform's database for a test: None (SQLite in its data dir) or a new PostgreSQL
    database with ``--database postgresql``."""
    if request.config.getoption("--database") == "sqlite":
        return None
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.new_database()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
