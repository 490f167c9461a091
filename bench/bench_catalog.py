"""Catalog benchmark: loading and listing a synthetic catalog of 200 charts, and
``resolve_values`` latency for the shipped jupyter-python chart with a realistic context."""

from __future__ import annotations

import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from datalab.catalog import SHIPPED_CATALOG_DIR, CatalogConfig, CatalogRegistry
from datalab.onyxia_context import (
    ContextProject,
    ContextUser,
    GitContext,
    RegionContext,
    S3Context,
    VaultContext,
    build_context,
)
from datalab.values import resolve_values

CHARTS = 200
RESOLVE_RUNS = 1000
LISTING_RUNS = 200

_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {
        "resources": {"type": "object", "x-onyxia": {"overwriteSchemaWith": "ide/resources.json"}},
        "s3": {"type": "object", "x-onyxia": {"overwriteSchemaWith": "ide/s3.json"}},
        "replicas": {"type": "integer", "default": 1},
    },
}
_TEMPLATE = (
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\n"
    "data:\n  replicas: {{ .Values.replicas | quote }}\n"
)


def _synthetic_catalog(root: Path) -> None:
    for index in range(CHARTS):
        chart = root / f"chart-{index:03d}"
        (chart / "templates").mkdir(parents=True)
        (chart / "Chart.yaml").write_text(
            f"apiVersion: v2\nname: chart-{index:03d}\nversion: 1.{index}.0\n"
            f"description: synthetic chart {index}\nkeywords: [bench]\n"
        )
        (chart / "values.yaml").write_text("replicas: 1\n")
        (chart / "values.schema.json").write_text(json.dumps(_SCHEMA))
        (chart / "templates" / "configmap.yaml").write_text(_TEMPLATE)


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 3),
    }


def _context(seed: int) -> dict[str, Any]:
    return build_context(
        ContextUser(idep="alice", name="Alice", email="alice@example.org", ip="10.0.0.1"),
        ContextProject(id="user-alice", password="pw"),
        RegionContext(resources={"cpuLimit": "4000m", "memoryLimit": "8Gi"}),
        s3=S3Context("http://127.0.0.1:8333", "AK", "SK", "ST", bucket="user-alice"),
        vault=VaultContext("http://127.0.0.1:8200", token="hvs.x", top_dir="alice"),
        git=GitContext(name="Alice", email="alice@example.org"),
        rng=random.Random(seed),
    )


def run() -> dict[str, Any]:
    results: dict[str, Any] = {"charts": CHARTS}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "charts"
        _synthetic_catalog(root)
        registry = CatalogRegistry([CatalogConfig(id="bench", location=str(root))], Path(tmp) / "c")
        # cold: Helm's checks of 200 new charts (one child process); warm: from their cache
        previous_cache = os.environ.get("XDG_CACHE_HOME")
        os.environ["XDG_CACHE_HOME"] = str(Path(tmp) / "xdg-cache")
        try:
            for label in ("load_200_charts_cold_s", "load_200_charts_warm_s"):
                started = time.perf_counter()
                errors = registry.refresh_sync()
                results[label] = round(time.perf_counter() - started, 3)
                assert errors == {"bench": None}, errors
        finally:
            if previous_cache is None:
                os.environ.pop("XDG_CACHE_HOME", None)
            else:
                os.environ["XDG_CACHE_HOME"] = previous_cache
        assert len(registry.catalogs()[0].charts) == CHARTS

        samples = []
        for _ in range(LISTING_RUNS):
            started = time.perf_counter()
            listing = [catalog.to_json() for catalog in registry.catalogs()]
            samples.append(time.perf_counter() - started)
        assert len(listing[0]["charts"]) == CHARTS
        results["listing_200_charts"] = _percentiles(samples)

        shipped = CatalogRegistry(
            [CatalogConfig(id="datalab", location=str(SHIPPED_CATALOG_DIR))], Path(tmp) / "s"
        )
        shipped.refresh_sync()
        chart = shipped.get_chart("datalab", "jupyter-python")
        overrides = {"resources": {"limits": {"memory": "6Gi"}}, "git": {"name": "A. Martin"}}
        started = time.perf_counter()
        resolve_values(chart, _context(0), overrides=overrides)
        results["resolve_values_first_call_ms"] = round((time.perf_counter() - started) * 1000, 3)
        contexts = [_context(seed) for seed in range(RESOLVE_RUNS)]
        samples = []
        for context in contexts:
            started = time.perf_counter()
            resolve_values(chart, context, overrides=overrides)
            samples.append(time.perf_counter() - started)
        results["resolve_values_jupyter_python"] = {"runs": RESOLVE_RUNS, **_percentiles(samples)}
    return results


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
