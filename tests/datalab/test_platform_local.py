"""The platform with the real local backend: a service launched through the API runs as a
process and is reachable through the authenticated proxy by its owner only."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from datalab.app import create_app
from datalab.config import Settings, load_settings
from datalab.identity import accounts
from datalab.platform import Platform

from .conftest import ADMIN_PASSWORD, Api, wait_for_phase

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CHARTS = Path(__file__).resolve().parents[1] / "fixtures" / "charts"


@pytest.fixture
def local_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    monkeypatch.setenv("DATALAB_ADMIN_PASSWORD", ADMIN_PASSWORD)
    # not under pytest's tmp dir (mode 700): services run under per-user accounts when root
    root = Path(tempfile.mkdtemp(prefix="datalab-test-"))
    os.chmod(root, 0o711)
    yield load_settings(
        None,
        data_dir=root / "data",
        backend={"name": "local"},
        catalogs=[{"id": "test", "name": "Test charts", "location": str(CHARTS)}],
        storage={"mode": "disabled"},
        secrets={"mode": "disabled"},
    )
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def users(local_settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Api, Api]]:
    platform = Platform.create(local_settings)
    platform.ensure_admin()
    app = create_app(platform)
    await platform.start()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        apis = []
        for name in ("alice", "bob"):
            with platform.db.session() as session:
                user, _ = accounts.create_user(
                    session, local_settings.region, name, password=f"{name}-password-1"
                )
                _, token = accounts.create_token(session, user, "t", ttl_days=1)
            apis.append(Api(http, name, token))
        yield http, apis[0], apis[1]
    await platform.stop()


async def test_service_reachable_by_its_owner_only(
    users: tuple[httpx.AsyncClient, Api, Api],
) -> None:
    http, alice, bob = users
    await alice.call(
        "POST",
        "/api/services",
        json={"catalog": "test", "chart": "file-server", "name": "files", "set": ["greeting=hi"]},
    )
    service = await wait_for_phase(alice, "files", "running")
    assert service["urls"] == ["http://files.localhost:8000/"]  # its own origin

    # programs: the platform's /s/ with a token; the service's host with a token
    page = await http.get("/s/files/index.html", headers=alice.headers())
    assert page.status_code == 200 and page.text == "hi"
    assert page.headers["content-security-policy"] == "sandbox"
    host = {"Host": "files.localhost:8000"}
    page = await http.get("/index.html", headers={**host, **alice.headers()})
    assert page.status_code == 200 and page.text == "hi"
    assert (await http.get("/s/files/index.html", headers=bob.headers())).status_code == 404
    assert (await http.get("/index.html", headers={**host, **bob.headers()})).status_code == 404
    assert (await http.get("/index.html", headers=host)).status_code == 401
    # browsers without a token are sent to the service's origin
    moved = await http.get("/s/files/index.html?x=1")
    assert moved.status_code == 307
    assert moved.headers["location"] == "http://files.localhost:8000/index.html?x=1"
    assert (await http.get("/s/nope/index.html", headers=alice.headers())).status_code == 404

    logs = await alice.call("GET", "/api/services/files/logs")
    assert "GET /index.html" in logs
    await bob.call("GET", "/api/services/files/logs", expect=404)

    await alice.call("POST", "/api/services/files/suspend")
    assert (await http.get("/s/files/index.html", headers=alice.headers())).status_code == 503
    await alice.call("POST", "/api/services/files/resume")
    await wait_for_phase(alice, "files", "running")
    assert (await http.get("/s/files/index.html", headers=alice.headers())).text == "hi"
    await alice.call("DELETE", "/api/services/files")


async def test_envs_are_listed_and_pruned_by_admins_only(
    users: tuple[httpx.AsyncClient, Api, Api], local_settings: Settings
) -> None:
    http, alice, _ = users
    await alice.call("GET", "/api/envs", expect=403)
    await alice.call(
        "POST", "/api/services", json={"catalog": "test", "chart": "file-server", "name": "e"}
    )
    await wait_for_phase(alice, "e", "running")
    response = await http.post(
        "/api/auth/token", json={"username": "admin", "password": ADMIN_PASSWORD}
    )
    admin = Api(http, "admin", response.json()["token"])
    envs = await admin.call("GET", "/api/envs")
    assert len(envs) == 1 and envs[0]["services"] == ["e"]
    assert (await admin.call("POST", "/api/envs/prune"))["removed"] == []  # in use
    await alice.call("DELETE", "/api/services/e")
    assert (await admin.call("POST", "/api/envs/prune"))["removed"] == [envs[0]["key"]]
    assert await admin.call("GET", "/api/envs") == []
