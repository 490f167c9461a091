"""The registry: snapshots, refresh on demand and in the background without blocking readers,
the last good snapshot kept on failure, clear errors for unknown or broken charts."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from pathlib import Path

import helm_python
import httpx
import pytest

from datalab.catalog import (
    Catalog,
    CatalogConfig,
    CatalogError,
    CatalogRegistry,
    ChartInvalid,
    ChartNotFound,
    SchemaRegistry,
)
from datalab.catalog import registry as registry_module

from .conftest import ChartWriter


def _registry(root: Path, tmp_path: Path, **config: object) -> CatalogRegistry:
    return CatalogRegistry(
        [CatalogConfig(id="lab", name="Lab", location=str(root), **config)], tmp_path / "cache"
    )


def test_snapshot_is_empty_until_the_first_refresh(
    chart_writer: ChartWriter, tmp_path: Path
) -> None:
    chart_writer("app")
    registry = _registry(chart_writer.root, tmp_path)
    [catalog] = registry.catalogs()
    assert (catalog.id, catalog.name, catalog.chart_names()) == ("lab", "Lab", [])
    assert registry.refresh_sync() == {"lab": None}
    assert registry.catalogs()[0].chart_names() == ["app"]
    chart = registry.get_chart("lab", "app")
    assert chart.schemas is registry.schemas, "charts carry the registry's schema fragments"


def test_get_chart_errors_name_what_is_missing_and_what_exists(
    chart_writer: ChartWriter, tmp_path: Path
) -> None:
    chart_writer("jupyter-python", version="1.0.0", directory="j1")
    chart_writer("jupyter-python", version="1.1.0", directory="j2")
    chart_writer("mlflow")
    chart_writer("broken", templates={"x.yaml": "{{ if }}"})
    registry = _registry(chart_writer.root, tmp_path)
    registry.refresh_sync()
    assert registry.get_chart("lab", "jupyter-python").version == "1.1.0"
    assert registry.get_chart("lab", "jupyter-python", "1.0.0").version == "1.0.0"
    with pytest.raises(
        ChartNotFound, match=r"no catalog 'lap' \(did you mean 'lab'\?\); catalogs: lab"
    ):
        registry.get_chart("lap", "mlflow")
    with pytest.raises(ChartNotFound) as info:
        registry.get_chart("lab", "jupyter-pyton")
    assert str(info.value) == (
        "no chart 'jupyter-pyton' in catalog 'lab' (did you mean 'jupyter-python'?); "
        "charts: jupyter-python, mlflow"
    )
    assert info.value.status == 404
    with pytest.raises(
        ChartNotFound, match=r"has no version '9\.9\.9'; versions: 1\.1\.0, 1\.0\.0"
    ):
        registry.get_chart("lab", "jupyter-python", "9.9.9")
    with pytest.raises(
        ChartInvalid, match=r"chart 'broken' in catalog 'lab' is broken: .*broken template"
    ):
        registry.get_chart("lab", "broken")
    assert isinstance(ChartNotFound("x"), CatalogError)


def test_duplicate_catalog_ids_are_refused(tmp_path: Path) -> None:
    config = CatalogConfig(id="lab", location=str(tmp_path))
    with pytest.raises(CatalogError, match="repeated: lab"):
        CatalogRegistry([config, config], tmp_path / "cache")


def test_failed_refresh_keeps_the_last_good_snapshot(
    chart_writer: ChartWriter, tmp_path: Path
) -> None:
    chart_writer("app")
    registry = _registry(chart_writer.root, tmp_path)
    registry.refresh_sync()
    shutil.rmtree(chart_writer.root)
    errors = registry.refresh_sync("lab")
    assert errors["lab"] is not None
    assert "is not a directory" in errors["lab"]
    [catalog] = registry.catalogs()
    assert catalog.error is not None
    assert catalog.chart_names() == ["app"] and "is not a directory" in catalog.error
    assert registry.get_chart("lab", "app").name == "app"
    assert catalog.to_json()["error"] == catalog.error


def test_a_catalog_that_never_loaded_says_so(tmp_path: Path) -> None:
    registry = _registry(tmp_path / "missing", tmp_path)
    registry.refresh_sync()
    with pytest.raises(
        ChartNotFound, match=r"catalog 'lab' could not be loaded \(.*not a directory\)"
    ):
        registry.get_chart("lab", "app")


def test_older_helm_versions_are_fetched_on_demand(
    chart_writer: ChartWriter, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    for version in ["1.0.0", "2.0.0"]:
        path = chart_writer("app", version=version, directory=f"app-{version}")
        helm_python.package(path, destination=repo)
    helm_python.repo_index_generate(repo)
    registry = CatalogRegistry(
        [CatalogConfig(id="helm", location=repo.as_uri())], tmp_path / "cache"
    )
    registry.refresh_sync()
    assert [c.version for c in registry.catalogs()[0].charts["app"]] == ["2.0.0"]
    old = registry.get_chart("helm", "app", "1.0.0")
    assert old.version == "1.0.0" and old.versions == ("2.0.0", "1.0.0")
    assert old.schemas is registry.schemas
    assert registry.get_chart("helm", "app", "1.0.0") is old  # cached


def test_concurrent_on_demand_fetches_unpack_once(
    chart_writer: ChartWriter, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    for version in ["1.0.0", "2.0.0"]:
        path = chart_writer("app", version=version, directory=f"app-{version}")
        helm_python.package(path, destination=repo)
    helm_python.repo_index_generate(repo)
    registry = CatalogRegistry(
        [CatalogConfig(id="helm", location=repo.as_uri())], tmp_path / "cache"
    )
    registry.refresh_sync()
    results: list[object] = []
    threads = [
        threading.Thread(target=lambda: results.append(registry.get_chart("helm", "app", "1.0.0")))
        for _ in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(results) == 6 and all(r is results[0] for r in results)
    assert len(list((tmp_path / "cache" / "helm").glob("app-1.0.0-*"))) == 1


@pytest.mark.anyio
async def test_refresh_runs_in_a_thread_and_readers_are_never_blocked(
    chart_writer: ChartWriter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chart_writer("app")
    registry = _registry(chart_writer.root, tmp_path)
    await registry.refresh()
    gate, entered = threading.Event(), threading.Event()
    real_load = registry_module.load_catalog

    def slow_load(config: CatalogConfig, cache_dir: Path, http: httpx.Client) -> Catalog:
        entered.set()  # the real loader, held until the test says go
        assert gate.wait(10)
        return real_load(config, cache_dir, http)

    monkeypatch.setattr(registry_module, "load_catalog", slow_load)
    chart_writer("new-chart")
    refresh = asyncio.create_task(registry.refresh("lab"))
    assert await asyncio.to_thread(entered.wait, 10)
    started = time.perf_counter()
    assert registry.catalogs()[0].chart_names() == ["app"]  # old snapshot, served at once
    assert registry.get_chart("lab", "app").name == "app"
    assert time.perf_counter() - started < 0.1
    gate.set()
    assert await refresh == {"lab": None}
    assert registry.catalogs()[0].chart_names() == ["app", "new-chart"]


@pytest.mark.anyio
async def test_background_refresh_picks_up_changes_and_stops(
    chart_writer: ChartWriter, tmp_path: Path
) -> None:
    chart_writer("app")
    registry = _registry(chart_writer.root, tmp_path, refresh_interval_s=0.05)
    await registry.refresh()
    registry.start()
    registry.start()  # idempotent
    chart_writer("later")
    for _ in range(200):
        if "later" in registry.catalogs()[0].chart_names():
            break
        await asyncio.sleep(0.02)
    assert "later" in registry.catalogs()[0].chart_names()
    await registry.stop()
    chart_writer("after-stop")
    await asyncio.sleep(0.2)
    assert "after-stop" not in registry.catalogs()[0].chart_names()


@pytest.mark.anyio
async def test_unknown_catalog_refresh_is_an_error(tmp_path: Path) -> None:
    registry = _registry(tmp_path, tmp_path)
    with pytest.raises(ChartNotFound, match="no catalog 'nope'"):
        await registry.refresh("nope")


def test_admin_schema_dirs_reach_the_charts(chart_writer: ChartWriter, tmp_path: Path) -> None:
    (tmp_path / "admin" / "ide").mkdir(parents=True)
    (tmp_path / "admin" / "ide" / "git.json").write_text('{"type": "object", "title": "admin git"}')
    chart_writer("app")
    registry = CatalogRegistry(
        [CatalogConfig(id="lab", location=str(chart_writer.root))],
        tmp_path / "cache",
        schema_dirs=[tmp_path / "admin"],
    )
    registry.refresh_sync()
    schemas = registry.get_chart("lab", "app").schemas
    assert isinstance(schemas, SchemaRegistry)
    git = schemas.get("ide/git.json")
    assert git is not None and git["title"] == "admin git"
