"""Fixtures for the local backend: real processes, real environments (shared by the session)."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from datalab.backends.base import Phase, ServiceSpec, ServiceStatus
from datalab.backends.local import LocalBackend
from datalab.envs import Env, EnvManager, EnvSpec

RECIPES = Path(__file__).parents[2] / "fixtures" / "recipes"


def load_recipe(name: str) -> dict[str, Any]:
    recipe: dict[str, Any] = yaml.safe_load((RECIPES / f"{name}.yaml").read_text())
    return recipe


@pytest.fixture(scope="session")
def local_root() -> Iterator[Path]:
    """Not under pytest's tmp dir: that one is mode 700, and services of the per-user accounts
    must be able to enter the data directory (see docs/local-backend.md)."""
    root = Path(tempfile.mkdtemp(prefix="datalab-local-tests-", dir="/tmp"))
    os.chmod(root, 0o711)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def shared_envs(local_root: Path) -> EnvManager:
    return EnvManager(local_root / "envs", shared=os.geteuid() == 0)


@pytest.fixture(scope="session")
def jupyter_env(shared_envs: EnvManager) -> Env:
    """Built once per session (cold: ~10-60 s depending on the uv cache)."""
    spec = EnvSpec.from_recipe(load_recipe("jupyterlab")["environment"])
    return asyncio.run(shared_envs.ensure(spec))


class Services:
    """Helpers to describe services and wait for their phases."""

    def __init__(self, backend: LocalBackend) -> None:
        self.backend = backend

    def spec(
        self,
        recipe: dict[str, Any] | str | None,
        *,
        owner: str = "alice",
        values: dict[str, Any] | None = None,
        id: str | None = None,
    ) -> ServiceSpec:
        if isinstance(recipe, str):
            recipe = load_recipe(recipe)
        service_id = id or f"svc-{uuid.uuid4().hex[:8]}"
        return ServiceSpec(
            id=service_id,
            owner=owner,
            project=f"user-{owner}",
            catalog_id="tests",
            chart_name="test-chart",
            chart_version="1.0.0",
            chart_dir=self.chart(recipe, service_id),
            values=values or {},
        )

    def chart(self, recipe: dict[str, Any] | None, name: str) -> Path:
        """A chart directory holding ``recipe`` as its local.yaml (the backend reads it); None:
        a chart without one."""
        chart_dir = self.backend.data_dir / "test-charts" / name
        chart_dir.mkdir(parents=True, exist_ok=True)
        if recipe is not None:
            (chart_dir / "local.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
        return chart_dir

    @staticmethod
    def python(code: str, **extra: Any) -> dict[str, Any]:
        """A recipe running ``python -c code`` in a bare venv (built in well under a second)."""
        recipe: dict[str, Any] = {
            "environment": {"packages": []},
            "command": ["python", "-c", code],
            "readiness": {"tcp": True, "timeout": 20},
        }
        recipe.update(extra)
        return recipe

    async def wait(
        self, service_id: str, *phases: Phase, within: float = 60, backend: Any = None
    ) -> ServiceStatus:
        backend = backend or self.backend
        deadline = time.monotonic() + within
        while True:
            status: ServiceStatus = await backend.status(service_id)
            if status.phase in phases:
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"{service_id} still {status.phase} ({status.reason})")
            await asyncio.sleep(0.05)

    async def client(self, service_id: str) -> httpx.AsyncClient:
        """An HTTP client straight to the service (its socket or port), as the proxy reaches
        it; close it after use."""
        endpoint = await self.backend.endpoint(service_id)
        assert endpoint is not None
        transport = httpx.AsyncHTTPTransport(uds=endpoint.socket)
        return httpx.AsyncClient(transport=transport, base_url=endpoint.url, trust_env=False)

    async def run(self, spec: ServiceSpec, within: float = 60) -> ServiceStatus:
        await self.backend.install(spec)
        status = await self.wait(spec.id, Phase.RUNNING, Phase.FAILED, within=within)
        assert status.phase is Phase.RUNNING, status.reason
        return status


@pytest.fixture
def data_dir(local_root: Path) -> Iterator[Path]:
    path = local_root / uuid.uuid4().hex[:8]
    path.mkdir()
    os.chmod(path, 0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def backend(data_dir: Path, shared_envs: EnvManager) -> AsyncIterator[LocalBackend]:
    backend = LocalBackend(
        data_dir, "http://127.0.0.1:8000", env_manager=shared_envs, stop_grace_s=3
    )
    await backend.start()
    yield backend
    await backend.shutdown()  # stop_services_on_shutdown: nothing outlives the test


@pytest.fixture
def services(backend: LocalBackend) -> Services:
    return Services(backend)
