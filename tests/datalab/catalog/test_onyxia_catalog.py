"""The real Onyxia catalog (InseeFrLab/helm-charts-interactive-services) as it is: every chart
loads with its library-chart dependency, resolves for a new user, and Helm renders it with the
resolved values. Skipped where there is no clone of it (see ``onyxia_charts`` in conftest)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import helm_python
import httpx
import pytest
import yaml
from tests.datalab.catalog.conftest import onyxia_registry

from datalab.catalog import CatalogConfig, CatalogRegistry, SchemaRegistry
from datalab.catalog.sources import load_catalog
from datalab.values import resolve_values


@pytest.fixture(scope="module")
def registry(onyxia_charts: Path, tmp_path_factory: pytest.TempPathFactory) -> CatalogRegistry:
    return onyxia_registry(onyxia_charts, tmp_path_factory.mktemp("onyxia-registry"))


def test_every_chart_loads_and_the_library_is_hidden(
    registry: CatalogRegistry, onyxia_charts: Path
) -> None:
    [catalog] = registry.catalogs()
    assert catalog.broken == ()
    assert catalog.libraries == ("library-chart",)
    expected = {p.name for p in onyxia_charts.iterdir() if (p / "Chart.yaml").is_file()}
    assert set(catalog.chart_names()) == expected - {"library-chart"}
    assert len(catalog.chart_names()) >= 20


def test_every_chart_resolves_and_renders_for_a_new_user(
    registry: CatalogRegistry, context: dict[str, Any]
) -> None:
    [catalog] = registry.catalogs()
    for name in catalog.chart_names():
        chart = registry.get_chart("ide", name)
        values = resolve_values(chart, context).values
        with helm_python.Chart.load(chart.path) as loaded:
            manifests = loaded.render(values, name=f"{name}-1", namespace="user-alice")
        kinds = {
            document["kind"]
            for file, text in manifests.items()
            if not file.endswith("NOTES.txt")
            for document in yaml.safe_load_all(str(text))
            if isinstance(document, dict)
        }
        assert {"StatefulSet", "Service", "Secret"} <= kinds, name


def test_without_the_mirror_charts_pinning_an_older_library_are_broken(
    onyxia_charts: Path, tmp_path: Path
) -> None:
    """Offline, without a configured repository: the charts whose library-chart version the
    catalog does not hold are shown broken, naming the dependency; the others load."""
    with httpx.Client(timeout=5) as http:
        catalog = load_catalog(CatalogConfig(id="ide", location=str(onyxia_charts)), tmp_path, http)
    current = yaml.safe_load((onyxia_charts / "library-chart" / "Chart.yaml").read_text())
    for broken in catalog.broken:
        pinned = re.search(r"dependency library-chart (\S+) is missing", broken.reason)
        assert pinned and pinned[1] != current["version"], broken.reason
    assert len(catalog.chart_names()) + len(catalog.broken) >= 20


def _property_paths(node: dict[str, Any], prefix: str = "") -> set[str]:
    paths = set()
    for name, sub in (node.get("properties") or {}).items():
        paths.add(prefix + name)
        if isinstance(sub, dict):
            paths |= _property_paths(sub, f"{prefix}{name}.")
    return paths


def _overwritten_nodes(node: Any) -> list[dict[str, Any]]:
    """Every schema node of a chart that names a fragment (x-onyxia.overwriteSchemaWith)."""
    found = []
    if isinstance(node, dict):
        x_onyxia = node.get("x-onyxia")
        if isinstance(x_onyxia, dict) and isinstance(x_onyxia.get("overwriteSchemaWith"), str):
            found.append(node)
        for key, value in node.items():
            if key not in ("default", "enum", "listEnum", "x-onyxia"):
                found += _overwritten_nodes(value)
    elif isinstance(node, list):
        for item in node:
            found += _overwritten_nodes(item)
    return found


def test_shipped_fragments_keep_every_field_of_the_charts(onyxia_charts: Path) -> None:
    """A fragment replaces a chart's inline schema: it must not drop a field the chart has
    (tlsSecretName, asCodeServerRoot, regionInitCheckSum were dropped), nor change its type."""
    registry = SchemaRegistry.with_overrides()
    dropped: dict[str, set[str]] = {}
    named = set()
    for schema_file in sorted(onyxia_charts.glob("*/values.schema.json")):
        for node in _overwritten_nodes(json.loads(schema_file.read_text())):
            name = node["x-onyxia"]["overwriteSchemaWith"]
            named.add(name)
            fragment = registry.get(name)
            if fragment is None:
                continue  # an unknown name keeps the chart's inline schema, as on Onyxia
            assert fragment.get("type") == node.get("type"), (schema_file.parent.name, name)
            missing = _property_paths(node) - _property_paths(fragment)
            if missing:
                dropped.setdefault(name, set()).update(missing)
    assert dropped == {}
    # the GPU and Spark fragments Onyxia ships are shipped too
    assert {"ide/resources-gpu.json", "nodeSelector-gpu.json", "role-spark.json"} <= named
    assert {"ide/resources-gpu.json", "nodeSelector-gpu.json", "role-spark.json"} <= set(
        registry.names()
    )


def test_a_gpu_chart_takes_the_region_gpu_settings(
    registry: CatalogRegistry, context: dict[str, Any]
) -> None:
    gpu_context = {
        **context,
        "region": {
            **context["region"],
            "resources": {**context["region"]["resources"], "gpu": "2"},
            "nodeSelector": {"nvidia.com/gpu.present": "true"},
            "sliders": {"gpu": {"sliderMin": 1, "sliderMax": 8, "sliderStep": 1, "sliderUnit": ""}},
        },
    }
    resolved = resolve_values(registry.get_chart("ide", "jupyter-python-gpu"), gpu_context)
    assert resolved.values["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert resolved.values["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    gpu = resolved.schema["properties"]["resources"]["properties"]["limits"]["properties"]
    assert gpu["nvidia.com/gpu"]["sliderMax"] == 8
    spark = resolve_values(registry.get_chart("ide", "jupyter-pyspark"), context)
    assert spark.values["kubernetes"] == {"enabled": True, "role": "admin"}
