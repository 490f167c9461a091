"""A platform with the real embedded SeaweedFS and OpenBao, shared by a test module (starting
them takes seconds): users alice, bob and carol; project-team with alice and carol."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from botocore.client import BaseClient

from datalab.app import create_app
from datalab.config import Settings, load_settings
from datalab.identity import accounts
from datalab.platform import Platform
from datalab.storage.service import S3Credentials, s3_client

from ..conftest import ADMIN_PASSWORD, Api

TEAM = "project-team"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


def embedded_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings with embedded storage and secrets; ``overrides`` are sections as in the YAML
    file (as `load_settings` takes them)."""
    return load_settings(
        None,
        data_dir=data_dir,
        backend=overrides.pop("backend", {"name": "memory"}),
        storage={"mode": "embedded", **overrides.pop("storage", {})},
        secrets={"mode": "embedded", **overrides.pop("secrets", {})},
        **overrides,
    )


@dataclass
class Federated:
    platform: Platform
    http: httpx.AsyncClient
    users: dict[str, Api]

    def s3(self, credentials: S3Credentials) -> BaseClient:
        storage = self.platform.storage
        assert storage is not None
        return s3_client(
            storage.endpoint_url,
            storage.region,
            credentials.access_key_id,
            credentials.secret_access_key,
            credentials.session_token,
        )


async def start_federated(settings: Settings) -> tuple[Platform, httpx.AsyncClient]:
    platform = Platform.create(settings)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DATALAB_ADMIN_PASSWORD", ADMIN_PASSWORD)
        platform.ensure_admin()
    app = create_app(platform)
    await platform.start()
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
    return platform, http


def add_users(platform: Platform, http: httpx.AsyncClient) -> dict[str, Api]:
    users = {}
    with platform.db.session() as session:
        for name in ("alice", "bob", "carol"):
            user, _ = accounts.create_user(
                session, platform.settings.region, name, password=f"{name}-password-123"
            )
            _, token = accounts.create_token(session, user, "tests", ttl_days=1)
            users[name] = Api(http, name, token)
        accounts.create_project(
            session,
            platform.settings.region,
            "team",
            "Team",
            creator=accounts.get_user(session, accounts.ADMIN_NAME),
        )
        accounts.add_member(session, TEAM, "alice")
        accounts.add_member(session, TEAM, "carol")
    return users


@pytest.fixture(scope="module")
async def federated(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Federated]:
    settings = embedded_settings(tmp_path_factory.mktemp("federated") / "data")
    platform, http = await start_federated(settings)
    try:
        yield Federated(platform, http, add_users(platform, http))
    finally:
        await http.aclose()
        await platform.stop()


@asynccontextmanager
async def serving(platform: Platform) -> AsyncIterator[str]:
    """The platform's app on its configured loopback port (for clients outside the test:
    the CLI, services refreshing credentials); yields its URL."""
    url = platform.settings.server.url()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(platform, manage_lifecycle=False),
            host="127.0.0.1",
            port=platform.settings.server.port,
            log_level="warning",
            lifespan="off",
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        await task
