"""Local recipes from an overlay (a catalog's ``local_recipes``): another catalog's charts run
on the local backend without being forked, e.g. Onyxia's with the shipped ``onyxia`` overlay;
charts without a recipe stay listed, unavailable locally with the reason."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import yaml
from tests.datalab.catalog.conftest import onyxia_registry, write_chart

from datalab.backends.base import Phase, ServiceSpec
from datalab.backends.local import LocalBackend
from datalab.catalog import CatalogConfig, CatalogRegistry, load_catalog_file
from datalab.catalog.overlays import SHIPPED_OVERLAYS_DIR
from datalab.envs import EnvManager

from .test_shipped_charts import _service, render_recipe, resolve_values

FIXTURE = Path(__file__).parents[2] / "fixtures" / "onyxia" / "jupyter-python"
CATALOG = Path(__file__).parents[3] / "catalog"


def _registry(tmp_path: Path, **config: Any) -> CatalogRegistry:
    registry = CatalogRegistry([CatalogConfig(id="ide", **config)], tmp_path / "cache")
    assert registry.refresh_sync() == {"ide": None}
    return registry


def _renders(chart: Any, context: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """The recipe rendered as the local backend would (strict: a missing value fails)."""
    values = resolve_values(chart, context).values
    variables = {"values": values, "service": _service(tmp_path, chart.name), "env_dir": "/venv"}
    rendered: dict[str, Any] = render_recipe(chart.local_recipe, variables)
    return rendered


def test_the_shipped_onyxia_overlay_gives_onyxias_jupyter_a_recipe(
    tmp_path: Path, context: dict[str, Any]
) -> None:
    charts = tmp_path / "charts"
    charts.mkdir()
    (charts / "jupyter-python").symlink_to(FIXTURE, target_is_directory=True)
    plain = _registry(tmp_path / "plain", location=str(charts))
    assert not plain.get_chart("ide", "jupyter-python").runs_locally  # Onyxia's has none

    registry = _registry(tmp_path, location=str(charts), local_recipes="onyxia")
    [catalog] = registry.catalogs()
    assert catalog.broken == ()
    chart = registry.get_chart("ide", "jupyter-python")
    overlay = SHIPPED_OVERLAYS_DIR / "onyxia" / "jupyter-python" / "local.yaml"
    assert chart.runs_locally and chart.local_recipe == yaml.safe_load(overlay.read_text())
    # Helm and the backend read a copy in the cache; the catalog's directory is untouched
    assert (chart.path / "local.yaml").read_text() == overlay.read_text()
    assert chart.path.is_relative_to(tmp_path / "cache")
    assert chart.source == charts / "jupyter-python"
    assert not (FIXTURE / "local.yaml").exists()
    recipe = _renders(chart, context, tmp_path)
    assert recipe["env"]["JUPYTER_TOKEN"] == context["service"]["oneTimePassword"]
    assert recipe["env"]["AWS_ACCESS_KEY_ID"] == "AKIAALICE"
    # the same environment as datalab's own jupyter-python: services of both share it
    own = yaml.safe_load((CATALOG / "jupyter-python" / "local.yaml").read_text())
    assert chart.local_recipe is not None
    assert chart.local_recipe["environment"] == own["environment"]


def test_an_overlay_directory_replaces_a_recipe_and_a_bad_one_is_reported(
    tmp_path: Path,
) -> None:
    charts, overlay = tmp_path / "charts", tmp_path / "overlay"
    write_chart(charts, "app", local={"command": ["own"]})
    write_chart(charts, "bad")
    write_chart(charts, "other")
    (overlay / "app").mkdir(parents=True)
    (overlay / "app" / "local.yaml").write_text("command: [from-the-overlay]\n")
    (overlay / "bad").mkdir()
    (overlay / "bad" / "local.yaml").write_text("command: not-a-list\n")
    catalog_file = tmp_path / "catalog.yaml"
    catalog_file.write_text(
        "catalogs:\n  - id: ide\n    location: charts\n    local_recipes: ./overlay\n"
    )
    [config] = load_catalog_file(catalog_file)
    assert config.local_recipes == str(overlay)  # relative to the catalog file
    registry = CatalogRegistry([config], tmp_path / "cache")
    registry.refresh_sync()
    [catalog] = registry.catalogs()
    assert registry.get_chart("ide", "app").local_recipe == {"command": ["from-the-overlay"]}
    assert not registry.get_chart("ide", "other").runs_locally  # the overlay has none for it
    [broken] = catalog.broken
    assert broken.name == "bad" and "invalid local.yaml" in broken.reason
    # a changed overlay is a new copy at the next refresh
    (overlay / "app" / "local.yaml").write_text("command: [changed]\n")
    registry.refresh_sync()
    assert registry.get_chart("ide", "app").local_recipe == {"command": ["changed"]}


def test_a_chart_without_a_recipe_is_listed_kubernetes_only(tmp_path: Path) -> None:
    """The shipped rstudio: no local recipe, listed, and the local backend says why."""
    shipped = load_catalog_file(CATALOG / "catalog.yaml")
    registry = CatalogRegistry(shipped, tmp_path / "cache")
    registry.refresh_sync()
    [catalog] = registry.catalogs()
    assert "rstudio" in catalog.chart_names()  # never hidden
    chart = registry.get_chart("datalab", "rstudio")
    assert not chart.runs_locally and chart.summary()["runs_locally"] is False
    backend = LocalBackend(tmp_path / "data", "http://127.0.0.1:8000")
    reason = backend.unavailable(chart.path, chart.name)
    assert reason is not None and "needs the kubernetes backend" in reason
    for name in ("postgresql", "redis", "jupyter-r", "jupyter-pyspark", "vscode"):
        assert registry.get_chart("datalab", name).runs_locally, name


def test_onyxias_real_charts_with_the_overlay(
    onyxia_charts: Path, tmp_path: Path, context: dict[str, Any]
) -> None:
    registry = onyxia_registry(onyxia_charts, tmp_path, local_recipes="onyxia")
    [catalog] = registry.catalogs()
    assert catalog.broken == ()
    overlaid = {p.parent.name for p in (SHIPPED_OVERLAYS_DIR / "onyxia").glob("*/local.yaml")}
    assert overlaid == {"jupyter-python", "jupyter-pyspark", "vscode-python"}
    for name in catalog.chart_names():
        chart = registry.get_chart("ide", name)
        assert chart.runs_locally == (name in overlaid), name
        if chart.runs_locally:
            recipe = _renders(chart, context, tmp_path)
            assert recipe["password"] == context["service"]["oneTimePassword"], name
            assert recipe["env"]["AWS_ENDPOINT_URL"] == "http://127.0.0.1:8333", name


@pytest.mark.slow
@pytest.mark.anyio
async def test_the_local_backend_runs_a_chart_from_its_overlay(tmp_path: Path) -> None:
    charts, overlay = tmp_path / "charts", tmp_path / "overlay"
    write_chart(charts, "web")
    (overlay / "web").mkdir(parents=True)
    recipe = {
        "environment": {"packages": []},
        "command": ["python", "-m", "http.server", "{{ service.port }}", "--bind", "127.0.0.1"],
        "readiness": {"http": "/", "timeout": 60},
    }
    (overlay / "web" / "local.yaml").write_text(yaml.safe_dump(recipe))
    registry = _registry(tmp_path, location=str(charts), local_recipes=str(overlay))
    chart = registry.get_chart("ide", "web")
    # not under pytest's tmp dir (700): the services' accounts enter the data directory
    root = Path(tempfile.mkdtemp(prefix="dl-overlay-", dir="/tmp"))
    os.chmod(root, 0o711)
    backend = LocalBackend(
        root / "data",
        "http://127.0.0.1:8000",
        env_manager=EnvManager(root / "envs", shared=os.geteuid() == 0),
    )
    await backend.start()
    spec = ServiceSpec(
        id="web-1", owner="alice", project="user-alice", catalog_id="ide", chart_name="web",
        chart_version=chart.version, chart_dir=chart.path, values={},
    )  # fmt: skip
    try:
        assert backend.unavailable(chart.path, chart.name) is None
        await backend.install(spec)
        for _ in range(600):
            status = await backend.status(spec.id)
            if status.phase in (Phase.RUNNING, Phase.FAILED):
                break
            await anyio.sleep(0.1)
        assert status.phase is Phase.RUNNING, status.reason
        endpoint = await backend.endpoint(spec.id)
        assert endpoint is not None and endpoint.port
        async with httpx.AsyncClient(trust_env=False) as http:
            listing = await http.get(f"http://127.0.0.1:{endpoint.port}/")
        assert listing.status_code == 200
    finally:
        await backend.shutdown()
        shutil.rmtree(root, ignore_errors=True)
