"""deploy/helm/publish.py, what the charts workflow runs: the platform's chart and the catalog's
charts as a Helm repository (archives + index.yaml), with published versions never replaced."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import helm_python
import yaml

from .chart import CHART, REPO

PUBLISH = REPO / "deploy" / "helm" / "publish.py"
URL = "https://charts.example.org/datalab"
CATALOG_CHARTS = sorted(path.parent for path in (REPO / "catalog").glob("*/Chart.yaml"))


def _publish(repository: Path, *charts: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            str(PUBLISH),
            "--repository",
            str(repository),
            "--url",
            URL,
            *map(str, charts),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _index(repository: Path) -> dict:
    return yaml.safe_load((repository / "index.yaml").read_text())


def test_the_charts_become_a_helm_repository(tmp_path: Path) -> None:
    done = _publish(tmp_path, CHART, *CATALOG_CHARTS)
    assert done.returncode == 0, done.stderr
    entries = _index(tmp_path)["entries"]
    names = {yaml.safe_load((c / "Chart.yaml").read_text())["name"] for c in CATALOG_CHARTS}
    assert set(entries) == {"datalab", *names}
    for name, versions in entries.items():
        [entry] = versions
        archive = tmp_path / f"{name}-{entry['version']}.tgz"
        assert entry["urls"] == [f"{URL}/{archive.name}"]
        assert f"sha256:{entry['digest']}" == helm_python.digest(archive)
    # what `helm install` of the published platform's chart gets is the chart
    archive = tmp_path / f"datalab-{entries['datalab'][0]['version']}.tgz"
    with helm_python.Chart.load_archive(archive.read_bytes()) as chart:
        files = chart.render(None, name="datalab", namespace="datalab")
    assert any(path.endswith("deployment.yaml") for path in files)


def test_a_published_version_is_never_replaced(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    assert _publish(repository, CHART).returncode == 0
    before = (repository / "datalab-0.1.0.tgz").read_bytes()
    again = _publish(repository, CHART)
    assert again.returncode == 0, again.stderr
    assert "datalab-0.1.0.tgz: already published" in again.stdout
    assert (repository / "datalab-0.1.0.tgz").read_bytes() == before

    changed = shutil.copytree(CHART, tmp_path / "datalab")
    values = changed / "values.yaml"
    values.write_text(values.read_text().replace("logLevel: info", "logLevel: debug"))
    refused = _publish(repository, changed)
    assert refused.returncode == 2
    assert "already published with other content: bump the version" in refused.stderr
    assert (repository / "datalab-0.1.0.tgz").read_bytes() == before

    chart_yaml = changed / "Chart.yaml"
    chart_yaml.write_text(chart_yaml.read_text().replace("version: 0.1.0", "version: 0.1.1"))
    assert _publish(repository, changed).returncode == 0
    versions = [e["version"] for e in _index(repository)["entries"]["datalab"]]
    assert sorted(versions) == ["0.1.0", "0.1.1"]
