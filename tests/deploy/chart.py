"""What the tests of the platform's chart (deploy/helm/datalab) share: where it is, rendering it
with helm-python-sdk (Helm's Go SDK: no helm binary), and running the platform's own
configuration loader on what a rendered Deployment would give ``datalab up``."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import helm_python
import yaml

from datalab.config import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "datalab"
PRODUCTION_VALUES = REPO / "deploy" / "helm" / "values-production.example.yaml"
PLATFORM_RBAC = REPO / "deploy" / "kubernetes" / "platform-rbac.yaml"
KUBERNETES = "1.36.0"  # the test control plane's release (tools/kube-testenv/go.mod)

#: the Secrets the production example names, as an administrator would create them
PRODUCTION_SECRETS: dict[str, dict[str, str]] = {
    "datalab-database": {"url": "postgresql+psycopg://datalab:db-pass@127.0.0.1:5432/datalab"},
    "datalab-s3": {"accessKeyId": "platform-admin", "secretAccessKey": "s3-secret-key"},
    "datalab-vault": {"token": "vault-admin-token"},
    "datalab-oidc": {"clientSecret": "oidc-client-secret"},
    "datalab-session": {"sessionSecret": "a-long-random-session-key"},
}


def production_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load(PRODUCTION_VALUES.read_text())
    return values


def merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` merged in, at any depth (a copy)."""
    result = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


def render(
    values: dict[str, Any] | None, name: str = "datalab", namespace: str = "datalab"
) -> list[dict[str, Any]]:
    """Every object the chart makes with these values (tests' hooks included), as dicts."""
    with helm_python.Chart.load(CHART) as chart:
        files = chart.render(values, name=name, namespace=namespace)
    objects: list[dict[str, Any]] = []
    for path, text in sorted(files.items()):
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(obj for obj in yaml.safe_load_all(text) if obj)
    return objects


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    [found] = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    return found


def platform_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = one(objects, "Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return container


def container_environment(
    container: dict[str, Any], secret_value: Callable[[str, str], str]
) -> dict[str, str]:
    """The variables the container gets, ``secretKeyRef``s read with ``secret_value``."""
    environment = {}
    for entry in container.get("env", []):
        if "value" in entry:
            environment[entry["name"]] = entry["value"]
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            environment[entry["name"]] = secret_value(ref["name"], ref["key"])
    return environment


@contextmanager
def platform_environment(environment: dict[str, str]) -> Iterator[None]:
    """The process environment as the pod's: its DATALAB_* variables only."""
    saved = dict(os.environ)
    try:
        for key in [k for k in os.environ if k.startswith("DATALAB_")]:
            del os.environ[key]
        os.environ.update({k: v for k, v in environment.items() if k.startswith("DATALAB_")})
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def settings_in_pod(
    config_text: str, container: dict[str, Any], secret_value: Callable[[str, str], str], tmp: Path
) -> Settings:
    """What ``datalab up`` in the platform's container loads: the ConfigMap's datalab.yaml at
    $DATALAB_CONFIG (here a copy in ``tmp``) and the container's DATALAB_* variables."""
    environment = container_environment(container, secret_value)
    assert environment["DATALAB_CONFIG"] == "/etc/datalab/datalab.yaml"
    config = tmp / "datalab.yaml"
    config.write_text(config_text)
    environment["DATALAB_CONFIG"] = str(config)
    with platform_environment(environment):
        return load_settings()
