"""The shipped catalog loads, its charts render with Helm (defaults and a resolved user
context), and their local recipes render with the resolved values."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import helm_python
import jinja2
import jinja2.sandbox
import kubernetes_validate
import pytest
import yaml

from datalab.catalog import (
    SHIPPED_CATALOG_DIR,
    CatalogRegistry,
    Chart,
    load_catalog_file,
)
from datalab.values import resolve_values

from .conftest import REFRESH_URL

NAMESPACE = "user-alice"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> CatalogRegistry:
    configs = load_catalog_file(SHIPPED_CATALOG_DIR / "catalog.yaml")
    registry = CatalogRegistry(configs, tmp_path_factory.mktemp("cache"))
    assert registry.refresh_sync() == {"datalab": None}
    return registry


def render(chart: Chart, values: dict[str, Any] | None, release: str) -> dict[str, Any]:
    """Render with Helm's SDK; return {kind: manifest} (one of each kind here) and NOTES."""
    with helm_python.Chart.load(chart.path) as loaded:
        rendered = loaded.render(values, name=release, namespace=NAMESPACE)
    manifests: dict[str, Any] = {}
    for name, text in rendered.items():
        if name.endswith("NOTES.txt"):
            manifests["NOTES"] = text
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                key = doc["kind"]
                if key in manifests:  # a second one of a kind: by name
                    key = f"{key}/{doc['metadata']['name']}"
                assert key not in manifests, f"two {key}s"
                manifests[key] = doc
    return manifests


def test_shipped_catalog_file_and_charts(registry: CatalogRegistry) -> None:
    [catalog] = registry.catalogs()
    assert (catalog.id, catalog.name) == ("datalab", "Datalab")
    assert catalog.chart_names()[:2] == ["jupyter-python", "mlflow"]
    assert catalog.highlighted == ["jupyter-python", "mlflow"]
    assert catalog.broken == ()
    for name in ["jupyter-python", "mlflow"]:
        chart = registry.get_chart("datalab", name)
        assert chart.local_recipe is not None and chart.readme and chart.notes
        assert chart.icon and chart.keywords and chart.home and chart.sources


@pytest.mark.parametrize("name", ["jupyter-python", "mlflow"])
def test_charts_render_with_their_default_values(registry: CatalogRegistry, name: str) -> None:
    chart = registry.get_chart("datalab", name)
    manifests = render(chart, None, f"{name}-default")
    assert {"StatefulSet", "Service", "Ingress", "Secret"} <= set(manifests)
    assert "NetworkPolicy" not in manifests
    statefulset = manifests["StatefulSet"]
    assert statefulset["metadata"]["name"] == f"{name}-default"
    assert statefulset["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"] == {
        "storage": "10Gi"
    }
    service = manifests["Service"]
    assert service["spec"]["selector"] == statefulset["spec"]["selector"]["matchLabels"]


def test_jupyter_renders_with_a_resolved_user_context(
    registry: CatalogRegistry, context: dict[str, Any]
) -> None:
    chart = registry.get_chart("datalab", "jupyter-python")
    overrides = {"persistence": {"enabled": False}, "mlflow": {"trackingUri": "http://mlflow:5000"}}
    values = resolve_values(chart, context, overrides=overrides).values
    manifests = render(chart, values, "jupyter-a1b2")

    secret = manifests["Secret"]["stringData"]
    assert secret["JUPYTER_TOKEN"] == context["service"]["oneTimePassword"]
    assert secret["AWS_ACCESS_KEY_ID"] == "AKIAALICE"
    assert secret["AWS_SECRET_ACCESS_KEY"] == "alice-secret-key"
    assert secret["AWS_ENDPOINT_URL"] == "http://127.0.0.1:8333"
    assert secret["S3_WORKING_DIRECTORY"] == "user-alice/"
    assert secret["VAULT_TOKEN"] == "hvs.alice"
    assert secret["GIT_USER_MAIL"] == "alice@example.org"

    pod = manifests["StatefulSet"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["resources"]["limits"] == {"cpu": "4000m", "memory": "8Gi"}
    assert container["resources"]["requests"] == {"cpu": "200m", "memory": "512Mi"}
    assert {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow:5000"} in container["env"]
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
    assert pod["volumes"] == [{"name": "home", "emptyDir": {}}]
    assert "volumeClaimTemplates" not in manifests["StatefulSet"]["spec"]

    host = f"user-alice-{context['k8s']['randomSubdomain']}-0.localhost"
    assert manifests["Ingress"]["spec"]["rules"][0]["host"] == host
    assert (
        manifests["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"]
        == (manifests["StatefulSet"]["spec"]["selector"]["matchLabels"])
    )  # the region's defaultNetworkPolicy is on
    assert "s3://user-alice/" in manifests["NOTES"]


@pytest.mark.parametrize("name", ["jupyter-python", "mlflow", "autocode-api"])
def test_charts_give_renewable_s3_credentials_when_the_platform_renews_them(
    registry: CatalogRegistry, context_with_refresh: dict[str, Any], name: str
) -> None:
    chart = registry.get_chart("datalab", name)
    values = resolve_values(chart, context_with_refresh).values
    manifests = render(chart, values, f"{name}-r")
    [secret] = [
        doc["stringData"]
        for key, doc in manifests.items()
        if key.startswith("Secret") and "AWS_DEFAULT_REGION" in doc.get("stringData", {})
    ]
    assert secret["AWS_CONTAINER_CREDENTIALS_FULL_URI"] == REFRESH_URL
    assert secret["AWS_CONTAINER_AUTHORIZATION_TOKEN"] == "Bearer refresh-jwt"
    # static keys would take precedence over the renewable ones in every AWS SDK
    assert "AWS_ACCESS_KEY_ID" not in secret and "AWS_SESSION_TOKEN" not in secret
    variables = {"values": values, "service": _service(Path("/srv"), name), "env_dir": "/venv"}
    env = render_recipe(chart.local_recipe, variables)["env"]
    assert env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] == REFRESH_URL
    assert env["AWS_CONTAINER_AUTHORIZATION_TOKEN"] == "Bearer refresh-jwt"
    assert env["AWS_ACCESS_KEY_ID"] == env["AWS_SESSION_TOKEN"] == ""


def test_jupyter_turns_chosen_secrets_into_environment_variables(
    registry: CatalogRegistry, context: dict[str, Any], tmp_path: Path
) -> None:
    chart = registry.get_chart("datalab", "jupyter-python")
    overrides = {"vault": {"secret": "user-alice/database, user-alice/api"}}
    values = resolve_values(chart, context, overrides=overrides).values
    manifests = render(chart, values, "jupyter-v")
    assert manifests["Secret"]["stringData"]["VAULT_SECRETS"] == overrides["vault"]["secret"]
    [container] = manifests["StatefulSet"]["spec"]["template"]["spec"]["containers"]
    script = container["args"][0]
    assert 'os.environ["VAULT_SECRETS"]' in script
    syntax = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert syntax.returncode == 0, syntax.stderr  # the heredoc survives YAML's indentation
    code = script.split("<<'PY'\n", 1)[1].split("\nPY\n", 1)[0]
    compile(code, "vault-secrets", "exec")  # the Python in the heredoc, as the shell passes it
    variables = {"values": values, "service": _service(tmp_path, "jupyter"), "env_dir": "/venv"}
    vault_env = render_recipe(chart.local_recipe, variables)["vault_env"]
    assert vault_env == {
        "address": "http://127.0.0.1:8200",
        "token": "hvs.alice",
        "mount": "onyxia-kv",
        "secrets": "user-alice/database, user-alice/api",
    }
    without = render(chart, resolve_values(chart, context).values, "jupyter-w")
    [container] = without["StatefulSet"]["spec"]["template"]["spec"]["containers"]
    assert "VAULT_SECRETS" not in container["args"][0]


def test_mlflow_renders_with_s3_artifacts_and_without(
    registry: CatalogRegistry, context: dict[str, Any], context_without_s3: dict[str, Any]
) -> None:
    chart = registry.get_chart("datalab", "mlflow")
    with_s3 = render(chart, resolve_values(chart, context).values, "mlflow-x")
    secret = with_s3["Secret"]["stringData"]
    assert secret["MLFLOW_ARTIFACTS_DESTINATION"] == "s3://user-alice/mlflow-artifacts"
    assert secret["MLFLOW_S3_ENDPOINT_URL"] == "http://127.0.0.1:8333"
    assert secret["MLFLOW_BACKEND_STORE_URI"] == "sqlite:////mlflow/mlflow.db"
    [container] = with_s3["StatefulSet"]["spec"]["template"]["spec"]["containers"]
    assert {"name": "MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "value": "false"} in container["env"]
    assert "--workers 1" in container["args"][0]

    values = resolve_values(
        chart,
        context_without_s3,
        overrides={"mlflow": {"backendStoreUri": "postgresql://mlflow:pw@db:5432/mlflow"}},
    ).values
    assert values["s3"]["enabled"] is False
    secret = render(chart, values, "mlflow-y")["Secret"]["stringData"]
    assert secret["MLFLOW_ARTIFACTS_DESTINATION"] == "/mlflow/artifacts"
    assert secret["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql://")
    assert "AWS_ACCESS_KEY_ID" not in secret


def render_recipe(recipe: Any, variables: dict[str, Any]) -> Any:
    """Render every string of a local recipe as the local backend does (sandbox, strict)."""
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined)
    if isinstance(recipe, str):
        return env.from_string(recipe).render(variables)
    if isinstance(recipe, list):
        return [render_recipe(item, variables) for item in recipe]
    if isinstance(recipe, dict):
        return {key: render_recipe(value, variables) for key, value in recipe.items()}
    return recipe


def _service(tmp_path: Path, name: str) -> dict[str, Any]:
    """The recipe context the local backend gives a service (backends/local/backend.py)."""
    return {
        "id": f"{name}-a1b2",
        "owner": "alice",
        "project": NAMESPACE,
        "socket": f"/var/lib/datalab/services/{name}-a1b2/run/http.sock",
        "socket_dir": f"/var/lib/datalab/services/{name}-a1b2/run",
        "port": 0,
        "host": "127.0.0.1",
        "base_url": "/",
        "url": f"http://{name}-a1b2.localhost:8000/",
        "internal_url": f"http://127.0.0.1:8000/s/{name}-a1b2/",
        "token": "the-service-token",
        "workdir": str(tmp_path / "work"),
    }


@pytest.mark.parametrize("with_s3", [True, False])
def test_jupyter_local_recipe_renders(
    registry: CatalogRegistry,
    context: dict[str, Any],
    context_without_s3: dict[str, Any],
    tmp_path: Path,
    with_s3: bool,
) -> None:
    chart = registry.get_chart("datalab", "jupyter-python")
    values = resolve_values(chart, context if with_s3 else context_without_s3).values
    variables = {"values": values, "service": _service(tmp_path, "jupyter"), "env_dir": "/venv"}
    recipe = render_recipe(chart.local_recipe, variables)
    packages = " ".join(recipe["environment"]["packages"])
    for package in [
        "jupyterlab",
        "pandas",
        "pyarrow",
        "duckdb",
        "boto3",
        "s3fs",
        "polars",
        "mlflow",
    ]:
        assert package in packages
    assert chart.local_recipe is not None
    assert chart.local_recipe["listen"] == "unix"  # only the platform can connect to it
    assert (
        "--ServerApp.sock=/var/lib/datalab/services/jupyter-a1b2/run/http.sock"
        in (recipe["command"])
    )
    assert "--ServerApp.base_url=/" in recipe["command"]
    assert not any(values["security"]["password"] in arg for arg in recipe["command"])
    assert recipe["env"]["JUPYTER_TOKEN"] == values["security"]["password"]
    assert recipe["password"] == values["security"]["password"]
    assert recipe["env"]["AWS_ACCESS_KEY_ID"] == ("AKIAALICE" if with_s3 else "")
    assert recipe["env"]["AWS_ENDPOINT_URL"] == ("http://127.0.0.1:8333" if with_s3 else "")
    assert recipe["env"]["VAULT_TOKEN"] == "hvs.alice"
    assert recipe["env"]["GIT_PERSONAL_ACCESS_TOKEN"] == "ghp_alice"
    assert recipe["env"]["GIT_CONFIG_KEY_0"] == "credential.helper"
    assert "$GIT_PERSONAL_ACCESS_TOKEN" in recipe["env"]["GIT_CONFIG_VALUE_0"]
    assert recipe["readiness"]["http"] == "/api/status"
    assert recipe["url"] == "http://jupyter-a1b2.localhost:8000/lab"


@pytest.mark.parametrize("with_s3", [True, False])
def test_mlflow_local_recipe_renders(
    registry: CatalogRegistry,
    context: dict[str, Any],
    context_without_s3: dict[str, Any],
    tmp_path: Path,
    with_s3: bool,
) -> None:
    chart = registry.get_chart("datalab", "mlflow")
    values = resolve_values(chart, context if with_s3 else context_without_s3).values
    service = _service(tmp_path, "mlflow")
    recipe = render_recipe(
        chart.local_recipe, {"values": values, "service": service, "env_dir": "/venv"}
    )
    command = recipe["command"]
    assert command[:2] == ["mlflow", "server"]
    argument = dict(zip(command[2::2], command[3::2], strict=True))
    assert chart.local_recipe is not None
    assert chart.local_recipe["listen"] == "unix"  # only the platform can connect to it
    assert argument["--uvicorn-opts"] == f"--uds {service['socket']}"
    assert argument["--backend-store-uri"] == f"sqlite:///{service['workdir']}/mlflow.db"
    assert argument["--artifacts-destination"] == (
        "s3://user-alice/mlflow-artifacts" if with_s3 else f"{service['workdir']}/artifacts"
    )
    assert recipe["env"]["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    # its own host (browsers) and the platform's (the project's services, with their token)
    assert recipe["env"]["MLFLOW_SERVER_ALLOWED_HOSTS"].endswith(
        ",mlflow-a1b2.localhost:8000,127.0.0.1:8000"
    )
    assert (
        recipe["env"]["MLFLOW_SERVER_CORS_ALLOWED_ORIGINS"] == "http://mlflow-a1b2.localhost:8000"
    )
    assert recipe["readiness"]["http"] == "/health"


#: every chart the platform ships (libraries aside: they make no objects)
SHIPPED_CHARTS = sorted(
    path.parent.name
    for path in SHIPPED_CATALOG_DIR.glob("*/Chart.yaml")
    if yaml.safe_load(path.read_text()).get("type", "application") == "application"
)


@pytest.mark.parametrize("name", SHIPPED_CHARTS)
def test_rendered_charts_are_valid_kubernetes_objects(
    registry: CatalogRegistry, context: dict[str, Any], name: str
) -> None:
    """What the Kubernetes backend installs, with the values a user resolves: every object of
    every shipped chart passes the Kubernetes API's schemas, strictly (unknown fields are
    errors)."""
    chart = registry.get_chart("datalab", name)
    values = resolve_values(chart, context).values
    for key, manifest in render(chart, values, f"{name}-strict").items():
        if key != "NOTES":
            kubernetes_validate.validate(manifest, "1.33.0", strict=True)
