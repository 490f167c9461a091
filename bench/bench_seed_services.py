"""The seeds' services on the local backend: first (cold) and warm launch times.

For each shipped chart (``postgresql``, ``redis``, ``jupyter-r``, ``jupyter-pyspark``,
``vscode``), ``install()`` to ``running`` with the chart's default values (storage, secrets and
git off):

- ``<chart>_cold_s``: into an empty environment cache, as the first launch on a machine whose
  package caches (uv, npm, Maven) are warm: the environment is built (code-server compiles its
  native modules: minutes);
- ``<chart>_warm_s``: the median of the next launches, the environment cached: what users see
  every other time (the process start and its readiness).

``DATALAB_BENCH_SEEDS=postgresql,redis`` limits the charts.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from datalab.backends.base import Phase, ServiceSpec
from datalab.backends.local import LocalBackend
from datalab.envs import EnvManager

CATALOG = Path(__file__).parents[1] / "catalog"
CHARTS = ("postgresql", "redis", "jupyter-r", "jupyter-pyspark", "vscode")
WARM_LAUNCHES = 3
TIMEOUT_S = 2400.0


def run() -> dict[str, Any]:
    return asyncio.run(_run())


async def _run() -> dict[str, Any]:
    chosen = os.environ.get("DATALAB_BENCH_SEEDS")
    charts = [c for c in CHARTS if not chosen or c in chosen.split(",")]
    root = Path(tempfile.mkdtemp(prefix="datalab-bench-seeds-", dir="/tmp"))
    os.chmod(root, 0o711)  # noqa: S103 - the services' accounts must enter it
    envs = EnvManager(root / "envs", shared=os.geteuid() == 0, build_timeout_s=TIMEOUT_S)
    backend = LocalBackend(root / "data", "http://127.0.0.1:8000", env_manager=envs)
    await backend.start()
    results: dict[str, Any] = {"warm_launches": WARM_LAUNCHES}
    try:
        for chart in charts:
            cold = await _launch(backend, chart)
            warm = [await _launch(backend, chart) for _ in range(WARM_LAUNCHES)]
            results[f"{chart.replace('-', '_')}_cold_s"] = round(cold, 2)
            results[f"{chart.replace('-', '_')}_warm_s"] = round(statistics.median(warm), 2)
            print(f"   {chart}: cold {cold:.1f} s, warm {statistics.median(warm):.2f} s")
    finally:
        await backend.shutdown()
        shutil.rmtree(root, ignore_errors=True)
    return results


def _values(chart: str) -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CATALOG / chart / "values.yaml").read_text())
    for section in ("s3", "git", "vault"):
        if isinstance(values.get(section), dict):
            values[section]["enabled"] = False
    if "security" in values and "password" in values["security"]:
        values["security"]["password"] = uuid.uuid4().hex
    for section in ("postgresql", "redis"):
        if section in values:
            values[section]["password"] = uuid.uuid4().hex
    return values


async def _launch(backend: LocalBackend, chart: str) -> float:
    """Seconds from install() to running; the service is then removed."""
    spec = ServiceSpec(
        id=f"{chart[:8]}-{uuid.uuid4().hex[:6]}",
        owner="bench",
        project="user-bench",
        catalog_id="datalab",
        chart_name=chart,
        chart_version="bench",
        chart_dir=CATALOG / chart,
        values=_values(chart),
    )
    started = time.perf_counter()
    await backend.install(spec)
    try:
        while True:
            status = await backend.status(spec.id)
            if status.phase is Phase.RUNNING:
                return time.perf_counter() - started
            if status.phase is Phase.FAILED:
                raise RuntimeError(f"{chart} failed: {status.reason}")
            if time.perf_counter() - started > TIMEOUT_S:
                raise RuntimeError(f"{chart} not running after {TIMEOUT_S:g} s")
            await asyncio.sleep(0.05)
    finally:
        await backend.uninstall(spec.id)
