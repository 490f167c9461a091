"""The client address a request is counted and audited under: forwarded headers are believed
only from ``server.trusted_proxies`` (issue 14, item 7). The attacker is a local service: it
connects from loopback, as every service does, and sends X-Forwarded-For to pick the address."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import uvicorn

from datalab.app import create_app
from datalab.cli.server import uvicorn_options
from datalab.config import Settings, load_settings
from datalab.identity import accounts
from datalab.platform import Platform
from datalab.processes import free_port

pytestmark = pytest.mark.anyio

PASSWORD = "victim-password-123"


@asynccontextmanager
async def served(settings: Settings, **server: Any) -> AsyncIterator[tuple[Platform, str]]:
    """The platform served by uvicorn over TCP, with the options ``datalab up`` uses."""
    settings = settings.model_copy(
        update={
            "server": settings.server.model_copy(
                update={"port": free_port(), "host": "127.0.0.1", **server}
            )
        }
    )
    platform = Platform.create(settings)
    platform.ensure_admin()
    with platform.db.session() as session:
        accounts.create_user(session, settings.region, "victim", password=PASSWORD)
    await platform.start()
    options = {**uvicorn_options(settings), "lifespan": "off", "log_config": None}
    uvicorn_server = uvicorn.Server(
        uvicorn.Config(create_app(platform, manage_lifecycle=False), **options)
    )
    task = asyncio.create_task(uvicorn_server.serve())
    try:
        while not uvicorn_server.started:
            assert not task.done(), "uvicorn did not start"
            await asyncio.sleep(0.05)
        yield platform, settings.server.url()
    finally:
        uvicorn_server.should_exit = True
        await task
        await platform.stop()


async def _sign_in(http: httpx.AsyncClient, password: str, forwarded_for: str) -> int:
    response = await http.post(
        "/api/auth/token",
        json={"username": "victim", "password": password},
        headers={"X-Forwarded-For": forwarded_for},
    )
    return response.status_code


async def test_rotating_forwarded_for_does_not_escape_the_lockout(settings: Settings) -> None:
    async with served(settings) as (platform, url), httpx.AsyncClient(base_url=url) as http:
        failures = platform.settings.security.login_max_failures
        for attempt in range(failures + 3):
            assert await _sign_in(http, "guess", f"10.66.0.{attempt}") in (401, 429)
        # the account is locked for this client: the right password is refused too, whatever
        # address the client claims
        assert await _sign_in(http, PASSWORD, "10.66.1.1") == 429
        assert await _sign_in(http, PASSWORD, "127.0.0.2") == 429


async def test_the_audit_log_records_the_peer_not_the_claimed_address(settings: Settings) -> None:
    async with served(settings) as (platform, url), httpx.AsyncClient(base_url=url) as http:
        assert await _sign_in(http, "wrong", "203.0.113.9") == 401
        with platform.db.session() as session:
            token = accounts.create_token(session, accounts.get_user(session, "admin"), "t", 1)[1]
        entries = await http.get(
            "/api/audit",
            params={"action": "auth.create_token"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert entries.status_code == 200, entries.text
        assert [e["client_ip"] for e in entries.json()["entries"]] == ["127.0.0.1"]


async def test_a_configured_proxy_sets_the_client_address(settings: Settings) -> None:
    """Behind a trusted reverse proxy, each real client has its own failure count."""
    async with (
        served(settings, trusted_proxies=["127.0.0.0/8"]) as (platform, url),
        httpx.AsyncClient(base_url=url) as http,
    ):
        failures = platform.settings.security.login_max_failures
        for _ in range(failures):
            assert await _sign_in(http, "guess", "198.51.100.7") == 401
        assert await _sign_in(http, PASSWORD, "198.51.100.7") == 429
        assert await _sign_in(http, PASSWORD, "198.51.100.8") == 201
        with platform.db.session() as session:
            token = accounts.create_token(session, accounts.get_user(session, "admin"), "t", 1)[1]
        entries = await http.get(
            "/api/audit",
            params={"action": "auth.create_token", "limit": 1},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert entries.json()["entries"][0]["client_ip"] == "198.51.100.8"


def test_trusted_proxies_must_be_addresses(tmp_path: Any) -> None:
    from datalab.config import ConfigError

    with pytest.raises(ConfigError, match="not an IP address or CIDR network"):
        load_settings(None, data_dir=tmp_path, server={"trusted_proxies": ["proxy.example"]})
