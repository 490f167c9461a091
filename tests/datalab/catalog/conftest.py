"""Helpers for catalog tests: write small charts on disk, a realistic user context."""

from __future__ import annotations

import http.server
import io
import json
import os
import random
import shutil
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

from datalab.catalog import CatalogConfig, CatalogRegistry
from datalab.onyxia_context import (
    ContextProject,
    ContextUser,
    GitContext,
    RegionContext,
    S3Context,
    VaultContext,
    build_context,
)


@dataclass(frozen=True)
class ChartWriter:
    """The ``chart_writer`` fixture: ``chart_writer(name, **kwargs)`` writes a chart under
    ``root`` (`write_chart`)."""

    root: Path

    def __call__(self, name: str, **kwargs: Any) -> Path:
        return write_chart(self.root, name, **kwargs)


def write_chart(
    root: Path,
    name: str,
    *,
    version: str = "1.0.0",
    values: dict[str, Any] | None = None,
    schema: dict[str, Any] | None = None,
    templates: dict[str, str] | None = None,
    local: dict[str, Any] | None = None,
    chart_yaml: str | None = None,
    directory: str | None = None,
) -> Path:
    """A chart directory with the given files (a ConfigMap template by default)."""
    path = root / (directory or name)
    (path / "templates").mkdir(parents=True, exist_ok=True)
    (path / "Chart.yaml").write_text(
        chart_yaml
        if chart_yaml is not None
        else yaml.safe_dump(
            {"apiVersion": "v2", "name": name, "version": version, "description": f"{name} chart"}
        )
    )
    (path / "values.yaml").write_text(yaml.safe_dump(values or {}))
    if schema is not None:
        (path / "values.schema.json").write_text(json.dumps(schema))
    if templates is None:
        templates = {
            "configmap.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n"
            "  name: {{ .Release.Name }}\ndata: {}\n"
        }
    for file, text in templates.items():
        (path / "templates" / file).write_text(text)
    if local is not None:
        (path / "local.yaml").write_text(yaml.safe_dump(local))
    return path


@pytest.fixture
def chart_writer(tmp_path: Path) -> ChartWriter:
    root = tmp_path / "charts"
    root.mkdir(exist_ok=True)
    return ChartWriter(root)


REFRESH_URL = "http://127.0.0.1:8000/api/storage/credentials/refresh"


def alice_context(
    seed: int = 7, *, with_s3: bool = True, with_refresh: bool = False
) -> dict[str, Any]:
    """A realistic context: user alice, personal project, S3 and Vault, a region with limits;
    with_refresh: the platform can renew the S3 session (container credentials)."""
    return build_context(
        ContextUser(idep="alice", name="Alice Martin", email="alice@example.org", ip="10.1.2.3"),
        ContextProject(id="user-alice", password="project-secret-pw"),
        RegionContext(
            resources={"cpuRequest": "200m", "cpuLimit": "4000m", "memoryLimit": "8Gi"},
            sliders={
                "cpu": {"sliderMin": 100, "sliderMax": 4000, "sliderStep": 100, "sliderUnit": "m"}
            },
            default_network_policy=True,
            tolerations=[{"key": "gpu", "operator": "Exists"}],
        ),
        s3=S3Context(
            endpoint_url="http://127.0.0.1:8333",
            access_key_id="AKIAALICE",
            secret_access_key="alice-secret-key",
            session_token="alice-session",
            bucket="user-alice",
            credentials_url=REFRESH_URL if with_refresh else "",
            credentials_authorization="Bearer refresh-jwt" if with_refresh else "",
        )
        if with_s3
        else None,
        vault=VaultContext(address="http://127.0.0.1:8200", token="hvs.alice", top_dir="alice"),
        git=GitContext(name="Alice Martin", email="alice@example.org", token="ghp_alice"),
        rng=random.Random(seed),
    )


@pytest.fixture
def context() -> dict[str, Any]:
    return alice_context()


@pytest.fixture
def context_without_s3() -> dict[str, Any]:
    return alice_context(with_s3=False)


@pytest.fixture
def context_with_refresh() -> dict[str, Any]:
    return alice_context(with_refresh=True)


#: a clone of InseeFrLab/helm-charts-interactive-services (a bare git directory or a work
#: tree), for the tests over the real Onyxia catalog; they are skipped without one
ONYXIA_CHARTS_GIT = Path(
    os.environ.get(
        "DATALAB_TEST_ONYXIA_CHARTS",
        "/work/.mirror/InseeFrLab+helm-charts-interactive-services/repo",
    )
)


def onyxia_git(*args: str) -> bytes:
    """``git`` in the Onyxia charts' clone (skips the test when there is none)."""
    if not ONYXIA_CHARTS_GIT.exists() or shutil.which("git") is None:
        pytest.skip(f"no clone of helm-charts-interactive-services at {ONYXIA_CHARTS_GIT}")
    git_dir = ONYXIA_CHARTS_GIT / ".git" if (ONYXIA_CHARTS_GIT / ".git").exists() else None
    command = ["git", f"--git-dir={git_dir or ONYXIA_CHARTS_GIT}", *args]
    return subprocess.run(command, check=True, capture_output=True).stdout


def onyxia_charts_at(target: Path, revision: str = "HEAD", path: str = "charts") -> Path:
    """The real charts' ``path`` at ``revision``, unpacked under ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    archive = onyxia_git("archive", "--format=tar", revision, path)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return target / path


@pytest.fixture(scope="session")
def onyxia_charts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory of the real Onyxia charts (helm-charts-interactive-services' charts/)."""
    return onyxia_charts_at(tmp_path_factory.mktemp("onyxia"))


#: where helm-charts-interactive-services is published (its charts' dependencies name it)
ONYXIA_PUBLISHED = "https://inseefrlab.github.io/helm-charts-interactive-services"


def onyxia_registry(charts: Path, work: Path, local_recipes: str | None = None) -> CatalogRegistry:
    """The real Onyxia catalog, loaded as an administrator on a closed network would: with a
    local Helm repository standing for the published one, holding the library-chart versions
    some charts still pin, packaged from the clone's own history."""
    mirror = work / "mirror"
    mirror.mkdir(parents=True)
    current = yaml.safe_load((charts / "library-chart" / "Chart.yaml").read_text())["version"]
    needed = set()
    for chart_yaml in charts.glob("*/Chart.yaml"):
        for dependency in yaml.safe_load(chart_yaml.read_text()).get("dependencies") or []:
            if dependency["name"] == "library-chart":
                needed.add(str(dependency["version"]))
    for version in sorted(needed - {current}):
        log = onyxia_git(
            "log", "--format=%H", f"-Sversion: {version}", "--", "charts/library-chart/Chart.yaml"
        )
        for commit in log.decode().split():
            library = onyxia_charts_at(work / f"lib-{commit[:12]}", commit) / "library-chart"
            if yaml.safe_load((library / "Chart.yaml").read_text())["version"] == version:
                helm_python.package(library, destination=mirror)
                break
        else:
            pytest.skip(f"library-chart {version} is not in this clone's history")
    helm_python.repo_index_generate(mirror)
    config = CatalogConfig(
        id="ide",
        location=str(charts),
        repositories={ONYXIA_PUBLISHED: mirror.as_uri()},
        local_recipes=local_recipes,
    )
    registry = CatalogRegistry([config], work / "cache")
    registry.refresh_sync()
    return registry


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real HTTP server (thread) serving a directory."""
    root = tmp_path / "served"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(root)))
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()
