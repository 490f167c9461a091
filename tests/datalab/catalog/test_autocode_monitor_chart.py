"""The catalog entry `autocode-monitor` (chart and local recipe) and the compaction CronJob of
`autocode-api`: they render, and run what docs/monitoring.md documents."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import helm_python
import jinja2
import jinja2.sandbox
import pytest
import yaml

from autocode.monitor.alerts import AlertConfig
from datalab.catalog import SHIPPED_CATALOG_DIR, CatalogRegistry, Chart, load_catalog_file
from datalab.onyxia_context import (
    ContextProject,
    ContextUser,
    RegionContext,
    S3Context,
    build_context,
)
from datalab.values import resolve_values

NAMESPACE = "user-alice"


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> CatalogRegistry:
    registry = CatalogRegistry(
        load_catalog_file(SHIPPED_CATALOG_DIR / "catalog.yaml"), tmp_path_factory.mktemp("cache")
    )
    assert registry.refresh_sync() == {"datalab": None}
    [catalog] = registry.catalogs()
    assert {"autocode-monitor", "autocode-api"} <= set(catalog.chart_names())
    assert catalog.broken == ()
    return registry


def context(with_s3: bool = True) -> dict[str, Any]:
    return build_context(
        ContextUser(idep="alice", name="Alice Martin", email="alice@example.org", ip="10.1.2.3"),
        ContextProject(id=NAMESPACE, password="project-secret-pw"),
        RegionContext(
            resources={"cpuRequest": "500m", "cpuLimit": "2000m", "memoryLimit": "3Gi"},
            custom_values={"autocodeSourcePath": "/srv/datalab/src"},
        ),
        s3=S3Context(
            endpoint_url="http://127.0.0.1:8333",
            access_key_id="AKIAALICE",
            secret_access_key="alice-secret-key",
            session_token="alice-session",
            bucket="user-alice",
        )
        if with_s3
        else None,
        rng=random.Random(3),
    )


def render(chart: Chart, values: dict[str, Any] | None, release: str = "mon") -> dict[str, Any]:
    with helm_python.Chart.load(chart.path) as loaded:
        rendered = loaded.render(values, name=release, namespace=NAMESPACE)
    manifests: dict[str, Any] = {}
    for name, text in rendered.items():
        if name.endswith("NOTES.txt"):
            manifests["NOTES"] = text
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                manifests[doc["kind"]] = doc
    return manifests


def render_recipe(recipe: Any, variables: dict[str, Any]) -> Any:
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined)
    if isinstance(recipe, str):
        return env.from_string(recipe).render(variables)
    if isinstance(recipe, list):
        return [render_recipe(item, variables) for item in recipe]
    if isinstance(recipe, dict):
        return {key: render_recipe(value, variables) for key, value in recipe.items()}
    return recipe


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_the_chart_renders_for_a_user_with_s3(registry: CatalogRegistry) -> None:
    chart = registry.get_chart("datalab", "autocode-monitor")
    assert chart.local_recipe is not None and chart.readme and chart.icon
    values = resolve_values(chart, context(), overrides={"monitoring": {"minAutoRate": 0.3}}).values
    manifests = render(chart, values)
    assert {"Deployment", "Service", "Ingress", "Secret"} <= set(manifests)
    [container] = manifests["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert "--no-control-socket" in container["args"]
    assert container["args"][-1] == "autocode.monitor.dashboard:create_server()"
    env = env_of(container)
    assert env["AUTOCODE_MONITOR_DATA"] == "s3://user-alice/autocode-predictions-parquet"
    settings = AlertConfig.from_dict(json.loads(env["AUTOCODE_MONITOR_SETTINGS"]))
    assert settings.min_auto_rate == 0.3 and settings.drift_config.alpha == 0.01
    secret = manifests["Secret"]["stringData"]
    assert secret["AWS_ACCESS_KEY_ID"] == "AKIAALICE"
    assert secret["AUTOCODE_MONITOR_BASIC_PASSWORD"] == values["security"]["password"]
    assert (
        manifests["Service"]["spec"]["selector"]
        == (manifests["Deployment"]["spec"]["selector"]["matchLabels"])
    )


@pytest.mark.parametrize("with_s3", [True, False])
def test_the_local_recipe_serves_the_dashboard_on_the_socket(
    registry: CatalogRegistry, tmp_path: Path, with_s3: bool
) -> None:
    chart = registry.get_chart("datalab", "autocode-monitor")
    values = resolve_values(chart, context(with_s3)).values
    socket = "/var/lib/datalab/services/autocode-monitor-a1b2/run/http.sock"
    service = {
        "id": "autocode-monitor-a1b2",
        "owner": "alice",
        "project": NAMESPACE,
        "socket": socket,
        "port": 0,
        "host": "127.0.0.1",
        "base_url": "/",
        "url": "http://autocode-monitor-a1b2.localhost:8000/",
        "internal_url": "http://127.0.0.1:8000/s/autocode-monitor-a1b2/",
        "token": "service-token",
        "workdir": str(tmp_path / "work"),
    }
    recipe = render_recipe(
        chart.local_recipe, {"values": values, "service": service, "env_dir": "/venv"}
    )
    assert chart.local_recipe is not None
    assert chart.local_recipe["listen"] == "unix"
    command = recipe["command"]
    assert command[:3] == ["gunicorn", "--bind", f"unix:{socket}"]
    assert command[-1] == "autocode.monitor.dashboard:create_server()"
    env = recipe["env"]
    assert env["PYTHONPATH"] == "/srv/datalab/src"
    assert env["AUTOCODE_MONITOR_DATA"] == (
        "s3://user-alice/autocode-predictions-parquet"
        if with_s3
        else f"{tmp_path}/work/autocode-predictions-parquet"
    )
    # locally the dashboard compacts the API's log itself (no CronJob here)
    assert env["AUTOCODE_MONITOR_LOG"] == (
        "s3://user-alice/autocode-predictions" if with_s3 else ""
    )
    assert env["AUTOCODE_MONITOR_COMPACT_EVERY_S"] == "600"
    assert AlertConfig.from_dict(json.loads(env["AUTOCODE_MONITOR_SETTINGS"])).min_auto_rate is None
    assert env["AWS_ACCESS_KEY_ID"] == ("AKIAALICE" if with_s3 else "")
    assert recipe["readiness"]["http"] == "/healthz"
    assert recipe["url"] == "http://autocode-monitor-a1b2.localhost:8000/"
    packages = " ".join(recipe["environment"]["packages"])
    for package in ("dash", "plotly", "gunicorn", "duckdb", "pyarrow", "scipy", "boto3"):
        assert package in packages


def test_the_api_chart_compacts_its_log_on_a_schedule(registry: CatalogRegistry) -> None:
    chart = registry.get_chart("datalab", "autocode-api")
    values = resolve_values(chart, context()).values
    manifests = render(chart, values, "api")
    cronjob = manifests["CronJob"]
    assert cronjob["spec"]["schedule"] == "*/15 * * * *"
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]
    [container] = pod["spec"]["containers"]
    assert container["command"] == ["autocode", "logs", "compact"]
    assert container["args"] == [
        "--source", "s3://user-alice/autocode-predictions",
        "--output", "s3://user-alice/autocode-predictions-parquet",
    ]  # fmt: skip
    selector = manifests["Service"]["spec"]["selector"]
    assert not selector.items() <= pod["metadata"]["labels"].items()  # never a Service endpoint
    assert container["envFrom"] == [{"secretRef": {"name": "api-autocode-api"}}]
    # without S3 (nothing shipped) or when turned off: no CronJob
    assert "CronJob" not in render(chart, resolve_values(chart, context(False)).values, "api")
    off = resolve_values(chart, context(), overrides={"compaction": {"enabled": False}}).values
    assert "CronJob" not in render(chart, off, "api")
