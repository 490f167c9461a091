"""The catalog entry `label-studio`: the chart renders with Helm (SQLite or PostgreSQL, with the
values a user resolves: the first user, the project password, a generated API token, S3), its
objects are valid Kubernetes objects, and the local recipe renders with the same values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python
import jinja2
import jinja2.sandbox
import kubernetes_validate
import pytest
import yaml

from datalab.catalog import SHIPPED_CATALOG_DIR, CatalogRegistry, Chart, load_catalog_file
from datalab.values import resolve_values

NAMESPACE = "user-alice"


@pytest.fixture(scope="module")
def chart(tmp_path_factory: pytest.TempPathFactory) -> Chart:
    registry = CatalogRegistry(
        load_catalog_file(SHIPPED_CATALOG_DIR / "catalog.yaml"), tmp_path_factory.mktemp("cache")
    )
    assert registry.refresh_sync() == {"datalab": None}
    [catalog] = registry.catalogs()
    assert "label-studio" in catalog.chart_names()
    assert "label-studio" not in [broken.name for broken in catalog.broken]
    chart = registry.get_chart("datalab", "label-studio")
    assert chart.local_recipe is not None and chart.readme and chart.notes
    return chart


def render(chart: Chart, values: dict[str, Any] | None, release: str = "ls") -> dict[str, Any]:
    with helm_python.Chart.load(chart.path) as loaded:
        rendered = loaded.render(values, name=release, namespace=NAMESPACE)
    manifests: dict[str, Any] = {}
    for name, text in rendered.items():
        if name.endswith("NOTES.txt"):
            manifests["NOTES"] = text
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                assert doc["kind"] not in manifests
                manifests[doc["kind"]] = doc
    return manifests


def render_recipe(recipe: Any, variables: dict[str, Any]) -> Any:
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined)
    if isinstance(recipe, str):
        return env.from_string(recipe).render(**variables)
    if isinstance(recipe, list):
        return [render_recipe(item, variables) for item in recipe]
    if isinstance(recipe, dict):
        return {key: render_recipe(value, variables) for key, value in recipe.items()}
    return recipe


def service(tmp_path: Path) -> dict[str, Any]:
    """The recipe context the local backend gives a service (backends/local/backend.py)."""
    return {
        "id": "ls-a1b2",
        "owner": "alice",
        "project": NAMESPACE,
        "socket": "/var/lib/datalab/services/ls-a1b2/run/http.sock",
        "socket_dir": "/var/lib/datalab/services/ls-a1b2/run",
        "port": 0,
        "host": "127.0.0.1",
        "base_url": "/",
        "url": "http://ls-a1b2.localhost:8000/",
        "internal_url": "http://127.0.0.1:8000/s/ls-a1b2/",
        "token": "the-service-token",
        "workdir": str(tmp_path / "work"),
    }


def test_defaults_render_sqlite_on_a_volume(chart: Chart) -> None:
    manifests = render(chart, None)
    assert {"StatefulSet", "Service", "Ingress", "Secret", "NOTES"} <= set(manifests)
    secret = manifests["Secret"]["stringData"]
    assert secret["DJANGO_DB"] == "sqlite" and "POSTGRE_HOST" not in secret
    assert secret["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "true"
    [container] = manifests["StatefulSet"]["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "heartexlabs/label-studio:1.23.2"
    assert container["volumeMounts"] == [{"name": "data", "mountPath": "/label-studio/data"}]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["LABEL_STUDIO_BASE_DATA_DIR"] == "/label-studio/data"
    assert env["SENTRY_DSN"] == "" and env["COLLECT_ANALYTICS"] == "false"
    service = manifests["Service"]
    assert service["spec"]["ports"][0]["port"] == 8080
    selector = manifests["StatefulSet"]["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"] == selector


def test_resolved_for_a_user_with_postgresql_and_s3(chart: Chart, context: dict[str, Any]) -> None:
    overrides = {
        "labelStudio": {
            "database": {"type": "postgresql", "host": "pg.user-alice", "password": "pg-pw"}
        }
    }
    values = resolve_values(chart, context, overrides=overrides).values
    assert values["labelStudio"]["username"] == "alice@localhost"
    assert values["security"]["password"] == "project-secret-pw"  # the project's password
    token = values["security"]["apiToken"]
    assert token == context["service"]["oneTimePassword"] and len(token) >= 8
    manifests = render(chart, values)
    secret = manifests["Secret"]["stringData"]
    assert secret["LABEL_STUDIO_USERNAME"] == "alice@localhost"
    assert secret["LABEL_STUDIO_PASSWORD"] == "project-secret-pw"
    assert secret["LABEL_STUDIO_USER_TOKEN"] == token
    assert secret["DJANGO_DB"] == "default"
    assert (secret["POSTGRE_HOST"], secret["POSTGRE_PORT"], secret["POSTGRE_PASSWORD"]) == (
        "pg.user-alice",
        "5432",
        "pg-pw",
    )
    assert secret["AWS_ACCESS_KEY_ID"] == "AKIAALICE"
    assert secret["AWS_SESSION_TOKEN"] == "alice-session"
    assert secret["AWS_ENDPOINT_URL"] == "http://127.0.0.1:8333"
    for key, manifest in manifests.items():
        if key != "NOTES":
            kubernetes_validate.validate(manifest, "1.33.0", strict=True)
    assert "LABEL_STUDIO_API_KEY" in manifests["NOTES"]


def test_postgresql_without_a_host_is_refused(chart: Chart) -> None:
    with pytest.raises(Exception, match=r"labelStudio\.database\.host is needed"):
        render(chart, {"labelStudio": {"database": {"type": "postgresql"}}})


def test_local_recipe_renders(chart: Chart, context: dict[str, Any], tmp_path: Path) -> None:
    values = resolve_values(chart, context).values
    variables = {"values": values, "service": service(tmp_path), "env_dir": "/venv"}
    recipe = render_recipe(chart.local_recipe, variables)
    assert recipe["listen"] == "unix"
    assert recipe["environment"]["packages"][0] == "label-studio==1.23.2"
    script = recipe["command"][2]
    assert 'gunicorn --bind "unix:/var/lib/datalab/services/ls-a1b2/run/http.sock"' in script
    assert "label-studio init --quiet" in script
    env = recipe["env"]
    assert env["LABEL_STUDIO_BASE_DATA_DIR"] == str(tmp_path / "work" / "data")
    assert env["DJANGO_DB"] == "sqlite"
    assert env["LABEL_STUDIO_USERNAME"] == "alice@localhost"
    assert env["LABEL_STUDIO_PASSWORD"] == recipe["password"] == "project-secret-pw"
    assert env["LABEL_STUDIO_USER_TOKEN"] == values["security"]["apiToken"]
    assert env["CSRF_TRUSTED_ORIGINS"] == "http://ls-a1b2.localhost:8000"
    assert env["AWS_ACCESS_KEY_ID"] == "AKIAALICE" and env["AWS_ENDPOINT_URL"]
    # secrets never on the command line (ps shows it)
    assert "project-secret-pw" not in " ".join(recipe["command"])
    # the user can get the API token: the notes show it, with the URL for scripts
    assert values["security"]["apiToken"] in recipe["notes"]
    assert "http://127.0.0.1:8000/s/ls-a1b2/" in recipe["notes"]
