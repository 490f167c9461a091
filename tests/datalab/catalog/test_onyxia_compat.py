"""Onyxia compatibility: a chart shaped like InseeFrLab's jupyter-python loads from a
directory and from a packaged Helm repository, resolves over the context with the shipped
schema fragments (and with its own inline schemas alone), and renders with Helm."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

from datalab.catalog import CatalogConfig, CatalogRegistry, Chart, SchemaRegistry
from datalab.values import resolve_values

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "onyxia" / "jupyter-python"


@pytest.fixture
def onyxia_repo(tmp_path: Path) -> Path:
    """A Helm repository holding the fixture packaged twice, as `helm package` would."""
    repo = tmp_path / "repo"
    for version in ["2.3.8", "2.3.9"]:
        helm_python.package(FIXTURE, destination=repo, version=version)
    helm_python.repo_index_generate(repo)
    return repo


def _check_resolved(chart: Chart, values: dict[str, Any], context: dict[str, Any]) -> None:
    assert values["security"]["password"] == context["service"]["oneTimePassword"]
    assert values["s3"]["enabled"] is True
    assert values["s3"]["accessKeyId"] == "AKIAALICE"
    assert values["s3"]["secretAccessKey"] == "alice-secret-key"
    assert values["s3"]["endpoint"] == "127.0.0.1"
    assert values["vault"]["token"] == "hvs.alice"
    assert values["git"]["token"] == "ghp_alice"
    assert values["resources"]["limits"]["cpu"] == "4000m"
    assert values["resources"]["requests"]["cpu"] == "200m"
    subdomain = context["k8s"]["randomSubdomain"]
    assert values["ingress"]["hostname"] == f"user-alice-{subdomain}-0.localhost"
    assert values["route"]["hostname"] == f"user-alice-{subdomain}-0.localhost"  # via $ref
    assert values["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
    assert values["security"]["networkPolicy"]["enabled"] is True
    assert values["security"]["allowlist"]["ip"] == "10.1.2.3"
    assert values["userPreferences"]["language"] == "en"
    assert values["serviceAccount"] == {"create": True, "name": ""}  # outside the schema: kept
    assert values["networking"]["user"]["port"] == 5000  # unknown fragment: inline schema kept


def test_onyxia_chart_loads_from_a_directory_and_resolves(
    tmp_path: Path, context: dict[str, Any]
) -> None:
    shutil.copytree(FIXTURE, tmp_path / "charts" / "jupyter-python")
    registry = CatalogRegistry(
        [CatalogConfig(id="ide", location=str(tmp_path / "charts"))], tmp_path / "cache"
    )
    registry.refresh_sync()
    assert registry.catalogs()[0].broken == ()
    chart = registry.get_chart("ide", "jupyter-python")
    assert chart.version == "2.3.9" and "Jupyter" in chart.keywords
    resolved = resolve_values(chart, context)
    _check_resolved(chart, resolved.values, context)
    # the form schema: region sliders applied, list enums and Onyxia's hints kept
    cpu = resolved.schema["properties"]["resources"]["properties"]["limits"]["properties"]["cpu"]
    assert (cpu["sliderMax"], cpu["default"]) == (4000, "4000m")
    image = resolved.schema["properties"]["service"]["properties"]["image"]["properties"]
    assert image["version"]["listEnum"][0].startswith("inseefrlab/")
    assert image["version"]["hidden"] == {"value": True, "path": "service/image/custom/enabled"}


def test_onyxia_chart_resolves_with_its_inline_schemas_alone(
    tmp_path: Path, context: dict[str, Any]
) -> None:
    """An instance without any fragment: every overwriteSchemaWith falls back to the inline
    schema, as on an Onyxia instance that does not know the name."""
    empty = tmp_path / "no-fragments"
    empty.mkdir()
    shutil.copytree(FIXTURE, tmp_path / "charts" / "jupyter-python")
    registry = CatalogRegistry(
        [CatalogConfig(id="ide", location=str(tmp_path / "charts"))], tmp_path / "cache"
    )
    registry.refresh_sync()
    chart = registry.get_chart("ide", "jupyter-python")
    values = resolve_values(chart, context, schemas=SchemaRegistry([empty])).values
    _check_resolved(chart, values, context)
    assert values["s3"]["pathStyleAccess"] is True  # "{{s3.pathStyleAccess}}" -> boolean


def test_onyxia_chart_from_a_packaged_helm_repository(
    onyxia_repo: Path, tmp_path: Path, context: dict[str, Any]
) -> None:
    index = yaml.safe_load((onyxia_repo / "index.yaml").read_text())
    assert [e["version"] for e in index["entries"]["jupyter-python"]] == ["2.3.9", "2.3.8"]
    registry = CatalogRegistry(
        [CatalogConfig(id="inseefrlab", location=onyxia_repo.as_uri())], tmp_path / "cache"
    )
    assert registry.refresh_sync() == {"inseefrlab": None}
    chart = registry.get_chart("inseefrlab", "jupyter-python")
    assert chart.versions == ("2.3.9", "2.3.8")
    values = resolve_values(chart, context, overrides={"global": {"suspend": True}}).values
    _check_resolved(chart, values, context)

    older = registry.get_chart("inseefrlab", "jupyter-python", "2.3.8")
    assert resolve_values(older, context).values["security"]["password"]

    # Helm accepts the resolved values (it validates them against the chart's own schema)
    with helm_python.Chart.load(chart.path) as loaded:
        rendered = loaded.render(values, name="jupyter-python-123", namespace="user-alice")
    docs = {
        d["kind"]: d
        for d in yaml.safe_load_all(rendered["jupyter-python/templates/statefulset.yaml"])
        if d
    }
    assert docs["StatefulSet"]["spec"]["replicas"] == 0
    env = {
        e["name"]: e["value"]
        for e in docs["StatefulSet"]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["PASSWORD"] == context["service"]["oneTimePassword"]
    assert env["AWS_ACCESS_KEY_ID"] == "AKIAALICE"
    assert docs["Ingress"]["spec"]["rules"][0]["host"] == values["ingress"]["hostname"]
