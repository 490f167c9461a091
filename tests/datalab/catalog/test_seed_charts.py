"""The seeds' services of the shipped catalog (PostgreSQL, Redis, R, PySpark, VS Code,
RStudio): each renders with Helm for a resolved user context (a real image, the injected
credentials) and its local recipe renders with the same values. Launching and using them:
tests/datalab/test_seed_services.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from datalab.catalog import CatalogRegistry
from datalab.launch import resolve_values

from .test_shipped_charts import _service, registry, render, render_recipe

__all__ = ["registry"]  # the module's fixture, shared


def _local(chart: Any, values: dict[str, Any], tmp_path: Path, name: str) -> Any:
    variables = {"values": values, "service": _service(tmp_path, name), "env_dir": "/venv"}
    return render_recipe(chart.local_recipe, variables)


def test_postgresql(registry: CatalogRegistry, context: dict[str, Any], tmp_path: Path) -> None:
    chart = registry.get_chart("datalab", "postgresql")
    values = resolve_values(chart, context).values
    # the project's password, as Onyxia's database charts read it; the user's name
    assert values["postgresql"] == {
        "username": "alice",
        "password": "project-secret-pw",
        "database": "defaultdb",
    }
    manifests = render(chart, values, "postgresql-a1b2")
    assert manifests["Secret"]["stringData"]["POSTGRES_PASSWORD"] == "project-secret-pw"
    [container] = manifests["StatefulSet"]["spec"]["template"]["spec"]["containers"]
    assert container["image"].startswith("docker.io/library/postgres:")
    assert manifests["Service"]["spec"]["ports"][0]["port"] == 5432
    assert "Ingress" not in manifests  # not HTTP: reached inside the namespace
    assert "postgresql-a1b2:5432/defaultdb" in manifests["NOTES"]

    recipe = _local(chart, values, tmp_path, "postgresql")
    assert chart.local_recipe["listen"] == "unix"
    socket_dir = "/var/lib/datalab/services/postgresql-a1b2/run"
    assert recipe["readiness"]["unix"] == f"{socket_dir}/.s.PGSQL.5432"
    assert recipe["env"]["POSTGRES_PASSWORD"] == "project-secret-pw"
    assert not any("project-secret-pw" in arg for arg in recipe["command"])
    assert f"host={socket_dir}" in recipe["notes"]


def test_redis(registry: CatalogRegistry, context: dict[str, Any], tmp_path: Path) -> None:
    chart = registry.get_chart("datalab", "redis")
    values = resolve_values(chart, context).values
    assert values["redis"]["password"] == "project-secret-pw"
    manifests = render(chart, values, "redis-a1b2")
    assert manifests["Secret"]["stringData"]["REDIS_PASSWORD"] == "project-secret-pw"
    [container] = manifests["StatefulSet"]["spec"]["template"]["spec"]["containers"]
    assert container["image"].startswith("docker.io/library/redis:")
    assert "project-secret-pw" not in " ".join(container["args"])  # from the Secret
    assert 'requirepass "$REDIS_PASSWORD"' in container["args"][0]
    assert manifests["Service"]["spec"]["ports"][0]["port"] == 6379

    recipe = _local(chart, values, tmp_path, "redis")
    assert recipe["readiness"]["unix"] == "/var/lib/datalab/services/redis-a1b2/run/redis.sock"
    assert recipe["env"]["REDIS_PASSWORD"] == "project-secret-pw"
    assert not any("project-secret-pw" in arg for arg in recipe["command"])


@pytest.mark.parametrize("name", ["postgresql", "redis"])
def test_seed_charts_render_with_their_defaults(registry: CatalogRegistry, name: str) -> None:
    chart = registry.get_chart("datalab", name)
    assert chart.readme and chart.notes and chart.icon and chart.keywords
    manifests = render(chart, None, f"{name}-default")
    assert {"StatefulSet", "Service", "Secret"} <= set(manifests)
