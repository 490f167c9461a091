"""The catalog entry `autocode-api`: the chart renders with Helm (defaults, and values resolved
for a user with S3), the local recipe renders, and both run what the API documents."""

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
def chart(tmp_path_factory) -> Chart:
    registry = CatalogRegistry(
        load_catalog_file(SHIPPED_CATALOG_DIR / "catalog.yaml"), tmp_path_factory.mktemp("cache")
    )
    assert registry.refresh_sync() == {"datalab": None}
    [catalog] = registry.catalogs()
    assert "autocode-api" in catalog.chart_names() and catalog.broken == ()
    return registry.get_chart("datalab", "autocode-api")


def context(with_s3: bool = True, source: str | None = "/srv/datalab/src") -> dict[str, Any]:
    return build_context(
        ContextUser(idep="alice", name="Alice Martin", email="alice@example.org", ip="10.1.2.3"),
        ContextProject(id=NAMESPACE, password="project-secret-pw"),
        RegionContext(
            resources={"cpuRequest": "500m", "cpuLimit": "2000m", "memoryLimit": "3Gi"},
            custom_values={"autocodeSourcePath": source, "mlflowTrackingUri": "http://mlflow:5000"}
            if source
            else {},
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


def render(chart: Chart, values: dict[str, Any] | None, release: str = "api") -> dict[str, Any]:
    with helm_python.Chart.load(chart.path) as loaded:
        rendered = loaded.render(values, name=release, namespace=NAMESPACE)
    manifests: dict[str, Any] = {}
    for name, text in rendered.items():
        if name.endswith("NOTES.txt"):
            manifests["NOTES"] = text
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                key = doc["kind"] if doc["kind"] != "Secret" else doc["metadata"]["name"]
                assert key not in manifests
                manifests[key] = doc
    return manifests


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_renders_with_defaults(chart: Chart) -> None:
    manifests = render(chart, None)
    assert {"Deployment", "Service", "Ingress", "HorizontalPodAutoscaler"} <= set(manifests)
    assert {"api-autocode-api", "api-autocode-api-keys"} <= set(manifests)
    assert "NetworkPolicy" not in manifests
    deployment = manifests["Deployment"]
    assert "replicas" not in deployment["spec"]  # the HPA owns the replica count
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    env = env_of(container)
    assert env["AUTOCODE_API_MODEL"] == "models:/autocode-naf@champion"
    assert "AUTOCODE_API_THRESHOLD" not in env  # the model's own threshold
    assert "AUTOCODE_API_LOG_S3_URI" not in env and "MLFLOW_TRACKING_URI" not in env
    assert env["AUTOCODE_API_API_KEYS_FILE"] == "/etc/autocode-api/keys/api-keys.json"
    assert env["AUTOCODE_API_INSTANCE_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert pod["terminationGracePeriodSeconds"] >= 40
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["spool"]["emptyDir"]["sizeLimit"] == "2Gi"
    assert volumes["keys"]["secret"]["secretName"] == "api-autocode-api-keys"
    hpa = manifests["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "api-autocode-api",
    }
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 6)
    service = manifests["Service"]["spec"]
    assert service["selector"] == deployment["spec"]["selector"]["matchLabels"]
    keys = json.loads(manifests["api-autocode-api-keys"]["stringData"]["api-keys.json"])
    assert keys == {"version": 1, "keys": []}


def test_renders_with_a_resolved_user_context(chart: Chart, tmp_path: Path) -> None:
    from autocode.serve.auth import Authenticator, KeysFile

    entry, secret = KeysFile(tmp_path / "keys.json").add("dashboards")
    overrides = {
        "api": {"useModelThreshold": False, "threshold": 0.92, "maxBatchSize": 500},
        "mlflow": {"trackingUri": "http://mlflow-x:5000"},
        "security": {"apiKeys": [json.loads((tmp_path / "keys.json").read_text())["keys"][0]]},
        "autoscaling": {"enabled": False},
        "replicaCount": 3,
    }
    values = resolve_values(chart, context(), overrides=overrides).values
    assert values["security"]["username"] == "alice"
    assert values["local"]["sourcePath"] == "/srv/datalab/src"
    manifests = render(chart, values)
    assert "HorizontalPodAutoscaler" not in manifests
    deployment = manifests["Deployment"]
    assert deployment["spec"]["replicas"] == 3
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    env = env_of(container)
    assert env["AUTOCODE_API_THRESHOLD"] == "0.92"
    assert env["AUTOCODE_API_MAX_BATCH_SIZE"] == "500"
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow-x:5000"
    assert env["AUTOCODE_API_LOG_S3_URI"] == "s3://user-alice/autocode-predictions"
    secret_env = manifests["api-autocode-api"]["stringData"]
    assert secret_env["AWS_ACCESS_KEY_ID"] == "AKIAALICE"
    assert (
        secret_env["AWS_ENDPOINT_URL"]
        == secret_env["MLFLOW_S3_ENDPOINT_URL"]
        == ("http://127.0.0.1:8333")
    )
    assert secret_env["AUTOCODE_API_BASIC_USERNAME"] == "alice"
    assert secret_env["AUTOCODE_API_BASIC_PASSWORD"] == values["security"]["password"]
    assert len(values["security"]["password"]) >= 8
    # the mounted keys file is one the server accepts, and the key works with it
    keys_file = tmp_path / "mounted.json"
    keys_file.write_text(manifests["api-autocode-api-keys"]["stringData"]["api-keys.json"])
    principal = Authenticator(keys_file)._check_key(secret)
    assert principal.id == entry.id
    assert "s3://user-alice/autocode-predictions/date=YYYY-MM-DD/" in manifests["NOTES"]


def test_values_are_validated(chart: Chart) -> None:
    from datalab.values import ValuesError

    for overrides in (
        {"api": {"threshold": 1.5}},
        {"api": {"unknownCategorical": "maybe"}},
        {"model": {"uri": "ftp://nope"}},
        {"security": {"apiKeys": [{"id": "x", "name": "a", "hash": "md5:1"}]}},
    ):
        with pytest.raises(ValuesError):
            resolve_values(chart, context(), overrides=overrides)


def render_recipe(recipe: Any, variables: dict[str, Any]) -> Any:
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined)
    if isinstance(recipe, str):
        return env.from_string(recipe).render(variables)
    if isinstance(recipe, list):
        return [render_recipe(item, variables) for item in recipe]
    if isinstance(recipe, dict):
        return {key: render_recipe(value, variables) for key, value in recipe.items()}
    return recipe


@pytest.mark.parametrize("with_s3", [True, False])
def test_local_recipe_runs_the_api(chart: Chart, tmp_path: Path, with_s3: bool) -> None:
    values = resolve_values(chart, context(with_s3)).values
    assert values["mlflow"]["trackingUri"] == "http://mlflow:5000"  # the region's MLflow
    socket = "/var/lib/datalab/services/autocode-api-a1b2/run/http.sock"
    service = {
        "id": "autocode-api-a1b2",
        "owner": "alice",
        "project": NAMESPACE,
        "socket": socket,
        "port": 0,
        "host": "127.0.0.1",
        "base_url": "/",
        "url": "http://autocode-api-a1b2.localhost:8000/",
        "internal_url": "http://127.0.0.1:8000/s/autocode-api-a1b2/",
        "token": "service-token",
        "workdir": str(tmp_path / "work"),
    }
    recipe = render_recipe(
        chart.local_recipe, {"values": values, "service": service, "env_dir": "/venv"}
    )
    command = recipe["command"]
    assert command[:3] == ["python", "-m", "autocode.serve"]
    argument = dict(zip(command[3::2], command[4::2], strict=True))
    assert chart.local_recipe is not None
    assert chart.local_recipe["listen"] == "unix"  # only the platform can connect to it
    assert argument == {"--uds": socket, "--model": "models:/autocode-naf@champion"}
    env = recipe["env"]
    assert env["PYTHONPATH"] == "/srv/datalab/src"
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env["MLFLOW_TRACKING_TOKEN"] == "service-token"  # the service's own token
    assert env["AUTOCODE_API_LOG_DIR"] == f"{tmp_path}/work/spool"
    assert (
        env["AUTOCODE_API_BASIC_PASSWORD"] == values["security"]["password"] == recipe["password"]
    )
    assert env["AUTOCODE_API_THRESHOLD"] == ""  # rendered empty: left unset by the backend
    assert env["AUTOCODE_API_LOG_S3_URI"] == (
        "s3://user-alice/autocode-predictions" if with_s3 else ""
    )
    assert env["AWS_ACCESS_KEY_ID"] == ("AKIAALICE" if with_s3 else "")
    assert recipe["readiness"]["http"] == "/health"
    assert recipe["url"] == "http://autocode-api-a1b2.localhost:8000/docs"
    packages = " ".join(recipe["environment"]["packages"])
    for package in (
        "fastapi",
        "uvicorn",
        "mlflow",
        "fasttext-numpy2",
        "scikit-learn",
        "pystemmer",
        "argon2-cffi",
        "prometheus-client",
        "pydantic-settings",
    ):
        assert package in packages
    # every AUTOCODE_API_* variable of the recipe is a setting of the server
    from autocode.serve.settings import Settings

    fields = {f"AUTOCODE_API_{name.upper()}" for name in Settings.model_fields}
    assert {k for k in env if k.startswith("AUTOCODE_API_")} <= fields


def test_chart_variables_are_settings(chart: Chart) -> None:
    from autocode.serve.settings import Settings

    fields = {f"AUTOCODE_API_{name.upper()}" for name in Settings.model_fields}
    manifests = render(chart, {"api": {"useModelThreshold": False}})
    [container] = manifests["Deployment"]["spec"]["template"]["spec"]["containers"]
    names = {e["name"] for e in container["env"]}
    names |= set(manifests["api-autocode-api"]["stringData"])
    assert {n for n in names if n.startswith("AUTOCODE_API_")} <= fields
