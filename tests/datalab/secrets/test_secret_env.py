"""Secrets chosen at launch become environment variables of the service: the real local backend
(a process), the real embedded OpenBao, the service reading its secrets with its own token at
every start. Wrong choices are refused at launch with clear errors."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from datalab.db import Service
from datalab.platform import Platform

from ..conftest import Api, wait_for_phase
from ..storage.conftest import add_users, embedded_settings, start_federated

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CHARTS = Path(__file__).resolve().parents[2] / "fixtures" / "charts"
SECRET_VALUE = "hunter2-in-the-env"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def served() -> AsyncIterator[tuple[Platform, httpx.AsyncClient, Api, Api]]:
    # not under pytest's tmp dir (mode 700): services run under per-user accounts when root
    root = Path(tempfile.mkdtemp(prefix="datalab-secret-env-"))
    os.chmod(root, 0o711)
    settings = embedded_settings(
        root / "data",
        backend={"name": "local"},
        catalogs=[{"id": "test", "name": "Test charts", "location": str(CHARTS)}],
        storage={"mode": "disabled"},
    )
    platform, http = await start_federated(settings)
    try:
        users = add_users(platform, http)
        yield platform, http, users["alice"], users["bob"]
    finally:
        await http.aclose()
        await platform.stop()
        shutil.rmtree(root, ignore_errors=True)


def launch_body(name: str, secret: str, show: str = "DB_PASSWORD,DB_USER") -> dict:
    return {
        "catalog": "test",
        "chart": "secret-echo",
        "name": name,
        "values": {"show": show, "vault": {"secret": secret}},
    }


async def test_chosen_secrets_become_environment_variables(
    served: tuple[Platform, httpx.AsyncClient, Api, Api],
) -> None:
    platform, http, alice, _ = served
    await alice.call(
        "PUT",
        "/api/secrets/values/user-alice/database",
        json={"data": {"DB_PASSWORD": SECRET_VALUE, "DB_USER": "alice"}},
    )
    await alice.call(
        "PUT", "/api/secrets/values/user-alice/api", json={"data": {"DB_USER": "override"}}
    )
    await alice.call(
        "POST", "/api/services", json=launch_body("echo", "user-alice/database, user-alice/api")
    )
    await wait_for_phase(alice, "echo", "running")
    answer = (await http.get("/s/echo/", headers=alice.headers())).json()
    assert answer == {"DB_PASSWORD": SECRET_VALUE, "DB_USER": "override"}  # later secrets win

    # the platform keeps the path, never the value: not in the service's values nor its logs
    with platform.db.session() as session:
        row = session.get(Service, "echo")
        assert row is not None and SECRET_VALUE not in str(row.values)
    assert SECRET_VALUE not in await alice.call("GET", "/api/services/echo/logs")

    # read again at every start: a changed secret is seen after a restart; a deleted one
    # stops the start with a message naming it (and no value)
    await alice.call(
        "PUT", "/api/secrets/values/user-alice/database", json={"data": {"DB_PASSWORD": "v2"}}
    )
    await alice.call("POST", "/api/services/echo/suspend")
    await alice.call("POST", "/api/services/echo/resume")
    await wait_for_phase(alice, "echo", "running")
    assert (await http.get("/s/echo/", headers=alice.headers())).json()["DB_PASSWORD"] == "v2"

    await alice.call("DELETE", "/api/secrets/values/user-alice/api")
    await alice.call("POST", "/api/services/echo/suspend")
    await alice.call("POST", "/api/services/echo/resume")
    await wait_for_phase(alice, "echo", "failed")
    logs = await alice.call("GET", "/api/services/echo/logs")
    assert "cannot read the secret 'user-alice/api'" in logs and "no such secret" in logs
    await alice.call("DELETE", "/api/services/echo")


async def test_wrong_secret_choices_are_refused_at_launch(
    served: tuple[Platform, httpx.AsyncClient, Api, Api],
) -> None:
    _, _, alice, bob = served
    await bob.call(
        "PUT", "/api/secrets/values/user-bob/token", json={"data": {"TOKEN": "bob-only"}}
    )
    missing = await alice.call(
        "POST", "/api/services", json=launch_body("e1", "user-alice/nope"), expect=422
    )
    assert "there is no secret 'user-alice/nope'" in missing["error"]["message"]
    others = await alice.call(
        "POST", "/api/services", json=launch_body("e2", "user-bob/token"), expect=403
    )
    assert "not yours" in others["error"]["message"]
    unnamed = await alice.call(
        "POST", "/api/services", json=launch_body("e3", "database"), expect=403
    )
    assert "paths start with user-alice" in unnamed["error"]["message"]
    assert (await alice.call("GET", "/api/services"))["services"] == []
