"""Loading from the MLflow registry (real MLflow server, artifacts on SeaweedFS): by alias, with
retries until the alias exists, following the alias (hot reload), by fixed version."""

from __future__ import annotations

import time

import anyio
import pytest

from .conftest import running_app, set_alias, settings_for, spool_records, wait_until_ready

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def eventually_version(client, version: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = (await client.get("/model")).json()
        if body.get("version") == version:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"still serving {body.get('version')}, expected {version}")
        await anyio.sleep(0.1)


async def test_serves_the_alias_and_follows_it(registry_env, credentials, tmp_path) -> None:
    name = registry_env["name"]
    first, second = registry_env["versions"]
    set_alias(registry_env, "champion", first["version"])
    spool = tmp_path / "spool"
    settings = settings_for(f"models:/{name}@champion", spool, credentials, poll_interval_s=0.3)
    async with running_app(settings) as client:
        client.headers.update(credentials.headers)
        model = (await client.get("/model")).json()
        assert (model["name"], model["version"], model["alias"]) == (
            name,
            first["version"],
            "champion",
        )
        assert model["source"] == "registry" and model["run_id"] == first["run_id"]
        assert model["uri"] == f"models:/{name}/{first['version']}"
        assert model["metrics"]["val_accuracy"] == pytest.approx(0.61)
        assert model["params"]["model"] == "ensemble" and model["registry"]["source"]
        before = (await client.get("/predict", params={"text": "boulangerie"})).json()
        assert before["model"] == {"name": name, "version": first["version"]}

        set_alias(registry_env, "champion", second["version"])  # promotion
        model = await eventually_version(client, second["version"])
        assert model["metrics"]["val_accuracy"] == pytest.approx(0.72)
        after = (await client.get("/predict", params={"text": "boulangerie"})).json()
        assert after["model"]["version"] == second["version"]

        metrics = (await client.get("/metrics")).text
        info = 'autocode_api_model_info{{name="{}",source="registry",version="{}"}}'
        assert info.format(name, second["version"]) + " 1.0" in metrics
        assert info.format(name, first["version"]) not in metrics
        assert f"autocode_api_model_version {float(second['version'])}" in metrics

    versions = {r["id"]: r["model"]["version"] for r in spool_records(spool)}
    assert versions[before["id"]] == first["version"]
    assert versions[after["id"]] == second["version"]


async def test_retries_until_the_alias_exists(registry_env, credentials, tmp_path) -> None:
    name = registry_env["name"]
    alias = f"late-{int(time.time() * 1000)}"
    settings = settings_for(f"models:/{name}@{alias}", tmp_path / "spool", credentials)
    async with running_app(settings, wait_ready=False) as client:
        for _ in range(50):
            ready = await client.get("/ready")
            if "failed" in ready.json()["reason"]:
                break
            await anyio.sleep(0.1)
        assert ready.status_code == 503
        assert f"models:/{name}@{alias}" in ready.json()["reason"]
        assert "retrying" in ready.json()["reason"]
        set_alias(registry_env, alias, registry_env["versions"][1]["version"])
        body = await wait_until_ready(client, 60)
        assert body["model"]["version"] == registry_env["versions"][1]["version"]
        metrics = (await client.get("/metrics")).text
        assert 'autocode_api_model_loads_total{outcome="error"}' in metrics


async def test_a_fixed_version(registry_env, credentials, tmp_path) -> None:
    name = registry_env["name"]
    version = registry_env["versions"][0]["version"]
    settings = settings_for(
        f"models:/{name}/{version}", tmp_path / "spool", credentials, poll_interval_s=0.2
    )
    async with running_app(settings) as client:
        client.headers.update(credentials.headers)
        model = (await client.get("/model")).json()
        assert model["version"] == version and model["alias"] is None
        assert client.app.state.api.models.source.follows is False


async def test_a_run_uri(registry_env, credentials, tmp_path) -> None:
    run = registry_env["versions"][1]
    settings = settings_for(f"runs:/{run['run_id']}/model", tmp_path / "spool", credentials)
    async with running_app(settings) as client:
        client.headers.update(credentials.headers)
        model = (await client.get("/model")).json()
        assert model["version"] == f"run-{run['run_id'][:8]}" and model["source"] == "uri"
        assert model["metrics"]["val_accuracy"] == pytest.approx(0.72)
        coded = (await client.get("/predict", params={"text": "restaurant"})).json()
        assert coded["predictions"][0]["code"].startswith("56.")
