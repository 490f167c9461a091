"""The tenancy suite: a real platform (local backend with per-user accounts, embedded SeaweedFS
and OpenBao, served on a loopback port) and users who attack each other.

alice is the victim; bob shares the project ``project-team`` with her and mallory shares
nothing. Attacks come from where users really are: the API with their own token, a program
run under their service account on the same machine (:mod:`.attacker`), and pages served by
their services in the victim's browser. Every attempt is counted in the :class:`Ledger`; one
that gets through fails its test, and the count is written to
``test-artifacts/tenancy-attempts.json``.

Add a new attack here: a test in this package that records its attempts with
``ledger.expect_denied``.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from datalab.backends.local.accounts import Account, ensure_account
from datalab.config import load_settings
from datalab.identity import accounts
from datalab.platform import Platform

from ..conftest import Api, Ledger, local_server, wait_for_phase

TEAM = "project-team"
PRIVATE = "project-private"  # alice's project without bob
CHARTS = Path(__file__).resolve().parents[2] / "fixtures" / "charts"
ATTACKER = Path(__file__).with_name("attacker.py")

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="per-user service accounts exist only when the platform is root"
)


@pytest.fixture(scope="package")
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Tenancy:
    platform: Platform
    app: FastAPI
    url: str  # where the platform listens (loopback)
    http: httpx.AsyncClient  # through the real listener
    users: dict[str, Api]
    passwords: dict[str, str]

    @property
    def data_dir(self) -> Path:
        return self.platform.settings.data_dir

    async def account(self, user: str) -> Account:
        """The system account ``user``'s services run under."""
        return await ensure_account(user)

    async def run_as(self, user: str, probes: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Run the attacker's program under ``user``'s service account; its results."""
        account = await self.account(user)
        python = next(
            (p for p in ("/usr/bin/python3", "/usr/local/bin/python3") if os.access(p, os.X_OK)),
            None,
        )
        assert python is not None, "an interpreter every account may run (Debian's python3)"
        process = await asyncio.create_subprocess_exec(
            python,
            "-I",
            "-c",
            ATTACKER.read_text(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd="/",
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            user=account.uid,
            group=account.gid,
            extra_groups=[],
        )
        out, err = await asyncio.wait_for(process.communicate(json.dumps(probes).encode()), 300)
        assert process.returncode == 0, err.decode()
        answer = json.loads(out)
        assert answer["uid"] == account.uid
        return list(answer["results"])

    async def attack(
        self, ledger: Ledger, area: str, user: str, probes: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Run probes as ``user``'s service account; every one must be denied."""
        results = await self.run_as(user, probes)
        for result in results:
            ledger.record(area, json.dumps(result["probe"]), result["succeeded"], result["detail"])
        through = [r for r in results if r["succeeded"]]
        assert not through, f"attacks that got through as {user}: {through}"
        return results


@pytest.fixture(scope="package")
async def tenancy() -> AsyncIterator[Tenancy]:
    catalogs = [
        {"id": "test", "name": "Test charts", "location": str(CHARTS)},
        *[c.model_dump() for c in load_settings(None).catalogs],
    ]
    users: dict[str, Api] = {}
    passwords: dict[str, str] = {}
    async with (
        local_server(
            "dl-tenancy-",
            catalogs=catalogs,
            storage={"mode": "embedded"},
            secrets={"mode": "embedded"},
        ) as served,
        httpx.AsyncClient(base_url=served.url, timeout=60, trust_env=False) as http,
    ):
        region = served.settings.region
        with served.platform.db.session() as session:
            for name in ("alice", "bob", "mallory"):
                passwords[name] = f"{name}-password-123"
                user, _ = accounts.create_user(session, region, name, password=passwords[name])
                _, token = accounts.create_token(session, user, "tests", ttl_days=1)
                users[name] = Api(http, name, token)
            alice = accounts.get_user(session, "alice")
            accounts.create_project(session, region, "team", "Team", creator=alice)
            accounts.add_member(session, TEAM, "bob")
            accounts.create_project(session, region, "private", "Private", creator=alice)
        yield Tenancy(served.platform, served.app, served.url, http, users, passwords)


async def launch(api: Api, chart: str, name: str, **body: Any) -> dict[str, Any]:
    """Launch and wait until running."""
    project = body.pop("project", None)
    await api.call(
        "POST", "/api/services", project=project, json={"chart": chart, "name": name, **body}
    )
    return await wait_for_phase(api, name, "running", timeout=600, project=project)
