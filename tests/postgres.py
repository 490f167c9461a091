"""A real PostgreSQL server for the tests: Debian's (``make system-packages`` installs
``postgresql``), initialised in a temporary folder and started on a loopback port once per test
session, with password authentication. :func:`postgres_server` is the session fixture;
:meth:`PostgresServer.new_database` gives each test a database of its own.

PostgreSQL refuses to run as root: when the tests do (CI), the server runs as the ``postgres``
account the Debian package creates, in a folder that account owns.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TypedDict

import psycopg
import pytest

from datalab.processes import free_port


class _Account(TypedDict, total=False):
    """The keyword arguments of `subprocess` that run a program as another account."""

    user: int
    group: int
    extra_groups: list[int]


BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)  # newest first
USER = "datalab"


def _die_with_parent() -> None:
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: no server outlives the tests


class PostgresServer:
    def __init__(self) -> None:
        if not BIN_DIRS:
            raise RuntimeError(
                "PostgreSQL is not installed: apt-get install postgresql (make test does it)"
            )
        self.bin = BIN_DIRS[0]
        self.root = Path(tempfile.mkdtemp(prefix="datalab-postgres-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.password = secrets.token_urlsafe(16)
        self.process: subprocess.Popen[bytes] | None = None
        self._account = pwd.getpwnam("postgres") if os.geteuid() == 0 else None

    def _as_server_account(self) -> _Account:
        """Run as ``postgres`` when the tests run as root (initdb and postgres refuse root)."""
        if self._account is None:
            return {}
        return {"user": self._account.pw_uid, "group": self._account.pw_gid, "extra_groups": []}

    def start(self) -> None:
        password_file = self.root / "password"
        password_file.write_text(self.password + "\n")
        if self._account is not None:
            os.chown(self.root, self._account.pw_uid, self._account.pw_gid)
            os.chown(password_file, self._account.pw_uid, self._account.pw_gid)
        subprocess.run(
            [
                str(self.bin / "initdb"), "-D", str(self.data), "-U", USER,
                f"--pwfile={password_file}", "--auth=scram-sha-256", "-E", "UTF8",
                "--locale=C.UTF-8",
            ],
            check=True, capture_output=True, **self._as_server_account(),
        )  # fmt: skip
        password_file.unlink()
        with (self.root / "postgres.log").open("wb") as log:  # the server keeps its own copy
            self.process = subprocess.Popen(
                [
                    str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
                    "-c", "listen_addresses=127.0.0.1",
                    "-c", f"unix_socket_directories={self.root}",
                    "-c", "fsync=off", "-c", "max_connections=200",
                ],
                stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,
                **self._as_server_account(),
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                with self.connect("postgres"):
                    return
            except psycopg.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"PostgreSQL did not start: {(self.root / 'postgres.log').read_text()}"
                    ) from None
                time.sleep(0.2)

    def connect(self, database: str) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=USER,
            password=self.password,
            dbname=database,
            autocommit=True,
        )

    def new_database(self) -> str:
        """A new empty database; its SQLAlchemy URL."""
        name = f"test_{uuid.uuid4().hex[:12]}"
        with self.connect("postgres") as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://{USER}:{self.password}@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # "fast" shutdown
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(20)
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
