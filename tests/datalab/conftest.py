"""Platform fixtures: a real platform (SQLite in a temp dir, the shipped catalog, the in-memory
backend) served in-process through httpx's ASGI transport."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from datalab.app import create_app
from datalab.backends.local import LocalBackend
from datalab.config import Settings, load_settings
from datalab.envs import EnvManager
from datalab.identity import accounts
from datalab.platform import Platform
from datalab.processes import free_port

ADMIN_PASSWORD = "admin-password-for-tests"

#: The environments of the shipped services (R's JupyterLab, PySpark, code-server, Label
#: Studio: minutes to build cold), kept across sessions in the repository's ignored
#: ``.cache/seed-envs`` (``DATALAB_TEST_ENVS`` to put them elsewhere) and shared by the tests
#: that launch them, through the API or in the browser: a warm run only starts the services.
SEED_ENVS = Path(
    os.environ.get("DATALAB_TEST_ENVS") or Path(__file__).parents[2] / ".cache" / "seed-envs"
)


def use_seed_envs(platform: Platform) -> None:
    """Let the platform's local backend build and find its environments in ``SEED_ENVS``."""
    SEED_ENVS.mkdir(parents=True, exist_ok=True)
    # the services' accounts run the environments: every folder on the way lets them through
    for folder in (SEED_ENVS, SEED_ENVS.parent):
        os.chmod(folder, 0o755)
    backend = platform.backend
    assert isinstance(backend, LocalBackend), "the seed services run on the local backend"
    backend.envs = EnvManager(SEED_ENVS, shared=os.geteuid() == 0, build_timeout_s=1800)


@dataclass
class LocalServer:
    """A platform on the real local backend served by uvicorn on a loopback port."""

    platform: Platform
    app: FastAPI
    url: str
    settings: Settings


@contextlib.asynccontextmanager
async def local_server(
    prefix: str, prepare: Callable[[Platform], None] | None = None, **settings: Any
) -> AsyncIterator[LocalServer]:
    """A platform on the real local backend (``settings``: more of its settings), its admin
    created, ``prepare``d, started and served by uvicorn on a free port; stopped and its data
    removed at exit. The data directory is outside pytest's 0700 tmp dir: service accounts
    pass through it."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(root, 0o711)
    port = free_port()
    loaded = load_settings(
        None, data_dir=root / "data", server={"port": port}, backend={"name": "local"}, **settings
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DATALAB_ADMIN_PASSWORD", ADMIN_PASSWORD)
        platform = Platform.create(loaded)
        platform.ensure_admin()
    if prepare is not None:
        prepare(platform)
    app = create_app(platform, manage_lifecycle=False)  # the app's lifespan: its own parts only
    await platform.start()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    try:
        yield LocalServer(platform, app, f"http://127.0.0.1:{port}", loaded)
    finally:
        server.should_exit = True
        await task
        await platform.stop()
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class ServedPlatform:
    platform: Platform
    url: str  # where the platform listens (loopback)
    http: httpx.AsyncClient
    alice: Api


@contextlib.asynccontextmanager
async def served_local_platform(prefix: str) -> AsyncIterator[ServedPlatform]:
    """`local_server` with the real embedded object storage and the shared seed
    environments; alice and her API token."""
    async with (
        local_server(
            prefix, use_seed_envs, storage={"mode": "embedded"}, secrets={"mode": "disabled"}
        ) as served,
        httpx.AsyncClient(base_url=served.url, timeout=60, trust_env=False) as http,
    ):
        with served.platform.db.session() as session:
            user, _ = accounts.create_user(
                session, served.settings.region, "alice", password="alice-password-123"
            )
            _, token = accounts.create_token(session, user, "tests", ttl_days=1)
        yield ServedPlatform(served.platform, served.url, http, Api(http, "alice", token))


ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str | None) -> Settings:
    monkeypatch.setenv("DATALAB_ADMIN_PASSWORD", ADMIN_PASSWORD)
    monkeypatch.delenv("DATALAB_CONFIG", raising=False)
    # embedded SeaweedFS / OpenBao are opt-in per test (tests/datalab/storage, secrets)
    return load_settings(
        None,
        data_dir=tmp_path / "data",
        backend={"name": "memory"},
        storage={"mode": "disabled"},
        secrets={"mode": "disabled"},
        database_url=database_url,
    )


@dataclass
class Api:
    """An API client for one user, with helpers returning decoded JSON."""

    http: httpx.AsyncClient
    user: str
    token: str

    def headers(self, project: str | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token}"}
        if project:
            headers["X-Datalab-Project"] = project
        return headers

    async def call(
        self, method: str, path: str, *, expect: int = 200, project: str | None = None, **kw: Any
    ) -> Any:
        response = await self.http.request(method, path, headers=self.headers(project), **kw)
        assert response.status_code == expect, response.text
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.text


@dataclass
class Env:
    platform: Platform
    app: FastAPI
    http: httpx.AsyncClient
    admin: Api

    async def user(self, name: str, *, is_admin: bool = False) -> Api:
        """Create a user with an API token."""
        with self.platform.db.session() as session:
            user, _ = accounts.create_user(
                session,
                self.platform.settings.region,
                name,
                password=f"{name}-password-123",
                is_admin=is_admin,
            )
            _, token = accounts.create_token(session, user, "tests", ttl_days=1)
        return Api(self.http, name, token)


@pytest.fixture
async def env(settings: Settings) -> AsyncIterator[Env]:
    platform = Platform.create(settings)
    platform.ensure_admin()
    app = create_app(platform)
    await platform.start()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        with platform.db.session() as session:
            admin = accounts.get_user(session, "admin")
            _, token = accounts.create_token(session, admin, "tests", ttl_days=1)
        yield Env(platform, app, http, Api(http, "admin", token))
    await platform.stop()


async def wait_for_phase(
    api: Api, service_id: str, phase: str, timeout: float = 120, project: str | None = None
) -> dict[str, Any]:
    """Poll a service until it reaches ``phase``; a failure shows its reason and logs."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        service = await api.call("GET", f"/api/services/{service_id}", project=project)
        if service["phase"] == phase:
            return service
        assert service["phase"] != "failed" or phase == "failed", (
            service["reason"],
            await api.call("GET", f"/api/services/{service_id}/logs", project=project),
        )
        assert asyncio.get_running_loop().time() < deadline, service
        await asyncio.sleep(0.3)


@pytest.fixture(scope="module")
def provider() -> Iterator[str]:
    """A real OpenID Connect provider on loopback (PyPI oidc-provider-mock): its URL."""
    with warnings.catch_warnings():
        # the mock provider still imports authlib.jose, deprecated in authlib 1.9
        warnings.simplefilter("ignore", DeprecationWarning)
        import oidc_provider_mock

    with oidc_provider_mock.run_server_in_thread(require_nonce=True) as server:
        yield f"http://127.0.0.1:{server.server_port}"


async def oidc_sign_in(
    http: httpx.AsyncClient, provider: str, sub: str, claims: dict[str, Any]
) -> str:
    """The browser's part of a sign-in through ``provider`` as ``sub`` with ``claims``: start at
    the platform, authorize at the provider, come back; returns where the platform sends it."""
    async with httpx.AsyncClient() as browser:
        stored = await browser.put(f"{provider}/users/{sub}", json=claims)
        assert stored.status_code == 204, stored.text
        start = await http.get("/api/auth/oidc/login", params={"next": "/services"})
        assert start.status_code == 302
        authorize = start.headers["location"]
        query = parse_qs(urlsplit(authorize).query)
        assert query["code_challenge_method"] == ["S256"] and query["code_challenge"][0]
        assert query["nonce"][0] and query["state"][0]
        consent = await browser.post(authorize, data={"sub": sub})
        assert consent.status_code == 302, consent.text
    back = urlsplit(consent.headers["location"])
    assert back.path == "/api/auth/oidc/callback"
    done = await http.get(f"{back.path}?{back.query}")
    assert done.status_code == 302, done.text
    return str(done.headers["location"])


@dataclass
class Ledger:
    """Every attack attempt of the tenancy suite (tests/datalab/tenancy, and the browser's in
    tests/datalab/web), and those that got through (there must be none). The count is written
    to ``test-artifacts/tenancy-attempts.json``."""

    attempts: dict[str, int] = field(default_factory=dict)
    successes: list[str] = field(default_factory=list)

    def record(self, area: str, what: str, succeeded: bool, detail: str = "") -> None:
        self.attempts[area] = self.attempts.get(area, 0) + 1
        if succeeded:
            self.successes.append(f"{area}: {what} ({detail})")

    def expect_denied(self, area: str, what: str, succeeded: bool, detail: str = "") -> None:
        """Record an attempt and fail at once if it got through."""
        self.record(area, what, succeeded, detail)
        assert not succeeded, f"attack succeeded: {area}: {what} ({detail})"

    @property
    def total(self) -> int:
        return sum(self.attempts.values())


@pytest.fixture(scope="session")
def ledger() -> Iterator[Ledger]:
    ledger = Ledger()
    yield ledger
    if ledger.total:
        ARTIFACTS.mkdir(exist_ok=True)
        report = {
            "attempts": ledger.total,
            "by_area": ledger.attempts,
            "succeeded": ledger.successes,
        }
        (ARTIFACTS / "tenancy-attempts.json").write_text(json.dumps(report, indent=2) + "\n")
