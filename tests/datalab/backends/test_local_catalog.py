"""The shipped charts' local recipes run on the local backend (defaults from their values.yaml,
as the platform would resolve them with storage, secrets and git disabled)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

from datalab.backends.local import LocalBackend

from .conftest import Services

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CATALOG = Path(__file__).parents[3] / "catalog"


def chart(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    directory = CATALOG / name
    if not (directory / "local.yaml").exists():
        pytest.skip(f"the shipped catalog has no {name} local recipe")
    recipe = yaml.safe_load((directory / "local.yaml").read_text())
    values = yaml.safe_load((directory / "values.yaml").read_text())
    for section in ("s3", "git", "vault"):
        if isinstance(values.get(section), dict):
            values[section]["enabled"] = False
    return recipe, values


async def test_jupyter_python(backend: LocalBackend, services: Services) -> None:
    recipe, values = chart("jupyter-python")
    token = uuid.uuid4().hex
    values["security"]["password"] = token
    spec = services.spec(recipe, values=values, owner="dana")
    status = await services.run(spec, within=240)
    assert status.password == token
    code = "import pandas, pyarrow, duckdb, polars, boto3, s3fs, mlflow; print('ok')"
    async with await services.client(spec.id) as client:  # on its Unix socket
        status_page = await client.get("/api/status", headers={"Authorization": f"token {token}"})
        assert status_page.status_code == 200
    env_python = backend.envs.root / backend.get_state(spec.id)["env_key"] / "bin" / "python"
    result = await anyio.run_process([str(env_python), "-c", code])
    assert result.stdout.decode().strip() == "ok"
    await backend.uninstall(spec.id)


async def test_mlflow_logs_a_run(backend: LocalBackend, services: Services) -> None:
    recipe, values = chart("mlflow")
    spec = services.spec(recipe, values=values, owner="erin")
    await services.run(spec, within=240)
    # the URL other services of the project get as their MLflow tracking URI: the platform's,
    # which they reach with their token (tests/datalab/tenancy: the whole path)
    assert await backend.internal_url(spec.id) == f"http://127.0.0.1:8000/s/{spec.id}/"
    api = "/api/2.0/mlflow"
    async with await services.client(spec.id) as client:  # on its Unix socket
        created = await client.post(f"{api}/runs/create", json={"experiment_id": "0"})
        assert created.status_code == 200, created.text
        run_id = created.json()["run"]["info"]["run_id"]
        logged = await client.post(
            f"{api}/runs/log-metric",
            json={"run_id": run_id, "key": "accuracy", "value": 0.93, "timestamp": 0},
        )
        assert logged.status_code == 200, logged.text
        run = (await client.get(f"{api}/runs/get", params={"run_id": run_id})).json()
        assert run["run"]["data"]["metrics"][0]["value"] == 0.93
    assert (backend.services_dir / spec.id / "work" / "mlflow.db").exists()
    await backend.uninstall(spec.id)
