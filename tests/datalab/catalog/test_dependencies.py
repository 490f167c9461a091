"""Chart dependencies resolved as `helm dependency build` would (from the chart's charts/, a
file:// path, the catalog itself, a configured or declared Helm repository), library charts
hidden, and the load-time Helm check reporting render errors, on real charts rendered by Helm."""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path
from typing import Any

import helm_python
import httpx
import pytest
import yaml
from tests.datalab.catalog.conftest import ChartWriter, write_chart

from datalab.catalog import CatalogConfig, CatalogRegistry, ChartNotFound
from datalab.catalog.sources import Catalog, load_catalog
from datalab.catalog.versions import satisfies
from datalab.errors import ChartInvalid

UNREACHABLE = "https://charts.example.invalid/onyxia"  # never resolved: .invalid
LIBRARY_TEMPLATE = '{{- define "lib.configmap" -}}\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-lib\ndata:\n  from: library\n{{- end -}}\n'  # noqa: E501


def _load(config: CatalogConfig, cache: Path) -> Catalog:
    with httpx.Client() as http:
        return load_catalog(config, cache, http)


def _library(root: Path, version: str = "1.2.0", directory: str | None = None) -> Path:
    path = write_chart(
        root,
        "lib",
        version=version,
        directory=directory,
        templates={"_lib.tpl": LIBRARY_TEMPLATE},
        chart_yaml=yaml.safe_dump(
            {"apiVersion": "v2", "name": "lib", "version": version, "type": "library"}
        ),
    )
    return path


def _app(
    root: Path, constraint: str = "^1.0.0", repository: str = UNREACHABLE, **kwargs: Any
) -> Path:
    chart = {
        "apiVersion": "v2",
        "name": "app",
        "version": "1.0.0",
        "dependencies": [{"name": "lib", "version": constraint, "repository": repository}],
    }
    return write_chart(
        root,
        "app",
        chart_yaml=yaml.safe_dump(chart),
        templates={"cm.yaml": '{{ include "lib.configmap" . }}\n'},
        **kwargs,
    )


def _rendered(path: Path) -> str:
    with helm_python.Chart.load(path) as chart:
        manifests = chart.render(None, name="svc", namespace="ns")
    return "\n".join(str(text) for text in manifests.values())


@pytest.mark.parametrize(
    ("version", "constraint", "expected"),
    [
        ("2.1.7", "2.1.7", True),
        ("2.1.8", "2.1.7", False),
        ("2.1.9", "~2.1.0", True),
        ("2.2.0", "~2.1.0", False),
        ("2.9.0", "^2.1.0", True),
        ("3.0.0", "^2.1.0", False),
        ("0.2.5", "^0.2.3", True),
        ("0.3.0", "^0.2.3", False),
        ("1.2.9", "1.2.x", True),
        ("1.3.0", "1.2.x", False),
        ("5.0.0", "*", True),
        ("1.0.0-rc.1", "*", False),  # no pre-release unless the constraint names one
        ("1.0.0-rc.1", ">=1.0.0-rc.0", True),
        ("1.3.0", ">=1.2, <2", True),
        ("2.0.0", ">= 1.2 < 2", False),
        ("1.4.5", "1.2 - 1.4.5", True),
        ("1.4.6", "1.2 - 1.4.5", False),
        ("2.1.0", "<1.0.0 || >=2.0.0", True),
        ("1.0.0", "<1.0.0 || >=2.0.0", False),
        ("1.2.0", "!=1.2.0", False),
        ("1.2.3", "v1.2.3", True),
    ],
)
def test_helm_version_constraints(version: str, constraint: str, expected: bool) -> None:
    assert satisfies(version, constraint) is expected


def test_an_unreadable_constraint_is_a_clear_error() -> None:
    with pytest.raises(ChartInvalid, match="cannot read the version constraint 'latest'"):
        satisfies("1.0.0", "latest")


def test_a_dependency_from_the_catalog_itself(chart_writer: ChartWriter, tmp_path: Path) -> None:
    """Onyxia's layout: the library chart beside the charts that use it, which name the
    catalog's published URL as their repository (unreachable here)."""
    root = chart_writer.root
    _library(root, "1.0.0", directory="lib-old")
    _library(root, "1.2.0")
    source = _app(root)
    catalog = _load(CatalogConfig(id="lab", location=str(root)), tmp_path / "cache")
    assert catalog.broken == ()
    assert catalog.chart_names() == ["app"]  # the library is hidden, as Onyxia does
    assert catalog.libraries == ("lib",)
    assert catalog.to_json()["libraries"] == ["lib"]
    app = catalog.latest("app")
    assert app.source == source and app.path != source
    assert app.path.is_relative_to(tmp_path / "cache" / "lab" / "built")
    vendored = yaml.safe_load((app.path / "charts" / "lib" / "Chart.yaml").read_text())
    assert vendored["version"] == "1.2.0"  # the newest matching version
    assert not (source / "charts").exists()  # the catalog's directory is never written
    assert "from: library" in _rendered(app.path)
    # the same content reuses its build
    again = _load(CatalogConfig(id="lab", location=str(root)), tmp_path / "cache")
    assert again.latest("app").path == app.path


def test_library_charts_cannot_be_launched(chart_writer: ChartWriter, tmp_path: Path) -> None:
    root = chart_writer.root
    _library(root)
    _app(root)
    registry = CatalogRegistry([CatalogConfig(id="lab", location=str(root))], tmp_path / "cache")
    registry.refresh_sync()
    with pytest.raises(ChartNotFound, match="'lib' in catalog 'lab' is a library chart"):
        registry.get_chart("lab", "lib")
    assert registry.get_chart("lab", "app").name == "app"


def test_a_missing_dependency_is_a_load_error_for_that_chart(
    chart_writer: ChartWriter, tmp_path: Path
) -> None:
    root = chart_writer.root
    _library(root, "1.2.0")
    _app(root, constraint="~2.0.0")
    chart_writer("other")
    catalog = _load(CatalogConfig(id="lab", location=str(root)), tmp_path / "cache")
    assert catalog.chart_names() == ["other"]
    [broken] = catalog.broken
    assert broken.name == "app"
    assert "dependency lib ~2.0.0 is missing: not in its charts/ directory nor in this catalog" in (
        broken.reason
    )
    assert "cannot fetch https://charts.example.invalid/onyxia/index.yaml" in broken.reason


def test_an_unreadable_dependency_constraint_breaks_the_chart(
    chart_writer: ChartWriter, tmp_path: Path
) -> None:
    root = chart_writer.root
    _library(root)
    _app(root, constraint="newest")
    [broken] = _load(CatalogConfig(id="lab", location=str(root)), tmp_path / "cache").broken
    assert "chart 'app': dependency 'lib': cannot read the version constraint 'newest'" in (
        broken.reason
    )


def test_a_vendored_dependency_is_used_as_it_is(tmp_path: Path) -> None:
    root, elsewhere = tmp_path / "charts", tmp_path / "elsewhere"
    app = _app(root)
    (app / "charts").mkdir()
    helm_python.package(_library(elsewhere), destination=app / "charts")  # charts/lib-1.2.0.tgz
    catalog = _load(CatalogConfig(id="lab", location=str(root)), tmp_path / "cache")
    assert catalog.broken == ()
    chart = catalog.latest("app")
    assert chart.path == app and chart.source is None
    assert "from: library" in _rendered(chart.path)


def test_a_vendored_dependency_of_the_wrong_version_is_replaced(tmp_path: Path) -> None:
    root, elsewhere = tmp_path / "charts", tmp_path / "elsewhere"
    app = _app(root, constraint="1.2.0")
    (app / "charts").mkdir()
    helm_python.package(_library(elsewhere, "1.0.0"), destination=app / "charts")
    _library(root, "1.2.0")
    chart = _load(CatalogConfig(id="lab", location=str(root)), tmp_path / "cache").latest("app")
    assert sorted(p.name for p in (chart.path / "charts").iterdir()) == ["lib"]
    assert (app / "charts" / "lib-1.0.0.tgz").is_file()  # the source is untouched


def test_a_file_repository_relative_to_the_chart(tmp_path: Path) -> None:
    root = tmp_path / "charts"
    _library(root / "vendor", "1.2.0")  # not a chart of the catalog: a directory of them
    _app(root, repository="file://../vendor/lib")
    chart = _load(CatalogConfig(id="lab", location=str(root)), tmp_path / "cache").latest("app")
    assert "from: library" in _rendered(chart.path)

    _app(root, constraint="9.9.9", repository="file://../vendor/lib")
    [broken] = _load(CatalogConfig(id="lab", location=str(root)), tmp_path / "cache").broken
    assert "dependency lib 9.9.9 is not at file://../vendor/lib" in broken.reason

    # a chart cannot pull in another directory of the machine
    _library(tmp_path / "elsewhere", "1.2.0")
    _app(root, repository="file://../../elsewhere/lib")
    [broken] = _load(CatalogConfig(id="lab", location=str(root)), tmp_path / "cache").broken
    assert "at file://../../elsewhere/lib is outside its catalog" in broken.reason


def test_a_configured_helm_repository_serves_dependencies(tmp_path: Path) -> None:
    """A closed network: the repository charts name is mapped to a local mirror."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for version in ["1.1.0", "1.3.0", "2.0.0"]:
        helm_python.package(_library(tmp_path / f"src-{version}", version), destination=mirror)
    helm_python.repo_index_generate(mirror)
    _app(tmp_path / "charts")
    config = CatalogConfig(
        id="lab",
        location=str(tmp_path / "charts"),
        repositories={UNREACHABLE + "/": mirror.as_uri()},  # a trailing slash is no difference
    )
    catalog = _load(config, tmp_path / "cache")
    assert catalog.broken == ()
    chart = catalog.latest("app")
    version = yaml.safe_load((chart.path / "charts" / "lib" / "Chart.yaml").read_text())["version"]
    assert version == "1.3.0"  # the newest that ^1.0.0 accepts
    assert "from: library" in _rendered(chart.path)

    _app(tmp_path / "charts", constraint="~3.0")
    [broken] = _load(config, tmp_path / "cache").broken
    assert "has no matching version (versions: 2.0.0, 1.3.0, 1.1.0)" in broken.reason


def test_repositories_that_cannot_be_read_are_named(tmp_path: Path) -> None:
    root = tmp_path / "charts"
    _app(root, repository="oci://registry.example.org/charts")
    [broken] = _load(CatalogConfig(id="lab", location=str(root)), tmp_path / "cache").broken
    assert "only http(s):// and file:// Helm repositories are read" in broken.reason
    _app(root, repository="@stable")
    [broken] = _load(CatalogConfig(id="lab", location=str(root)), tmp_path / "cache").broken
    assert "map that repository to a URL in the catalog's 'repositories'" in broken.reason


def test_a_helm_repository_catalog_resolves_dependencies_from_its_index(tmp_path: Path) -> None:
    """A packaged chart without its dependency in charts/ (packaged before `helm dependency
    build`): the dependency comes from the same repository; the library is not listed."""
    repo = tmp_path / "repo"
    repo.mkdir()
    helm_python.package(_library(tmp_path / "src"), destination=repo)
    # as `tar czf` would: `helm package` refuses a chart whose dependency is not in charts/
    with tarfile.open(repo / "app-1.0.0.tgz", "w:gz") as archive:
        archive.add(_app(tmp_path / "src"), arcname="app")
    helm_python.repo_index_generate(repo)
    registry = CatalogRegistry(
        [CatalogConfig(id="helm", location=repo.as_uri())], tmp_path / "cache"
    )
    registry.refresh_sync()
    [catalog] = registry.catalogs()
    assert (catalog.chart_names(), catalog.libraries, catalog.broken) == (["app"], ("lib",), ())
    assert "from: library" in _rendered(registry.get_chart("helm", "app").path)


def test_the_helm_check_reports_render_errors(chart_writer: ChartWriter, tmp_path: Path) -> None:
    """A template that calls a template no chart defines (a library chart that is not there)
    renders with no default values: broken, with Helm's reason. A chart's own `required` is
    for the user to answer at launch: not broken."""
    chart_writer("orphan", templates={"cm.yaml": '{{ include "lib.configmap" . }}\n'})
    chart_writer("nil", templates={"cm.yaml": "x: {{ .Values.a.b }}\n"})
    chart_writer("asks", templates={"x.yaml": '{{ required "host needed" .Values.host }}'})
    root = chart_writer.root
    catalog = _load(CatalogConfig(id="lab", location=str(root)), tmp_path / "cache")
    assert catalog.chart_names() == ["asks"]
    reasons = {b.name: b.reason for b in catalog.broken}
    assert 'no template "lib.configmap"' in reasons["orphan"]
    assert "Helm cannot render it with its default values" in reasons["orphan"]
    assert "nil pointer" in reasons["nil"]


def test_a_broken_library_breaks_the_charts_using_it(tmp_path: Path) -> None:
    root = tmp_path / "charts"
    library = _library(root)
    (library / "templates" / "_lib.tpl").write_text('{{- define "lib.configmap" -}}{{ .Nope.x')
    _app(root)
    catalog = _load(CatalogConfig(id="lab", location=str(root)), tmp_path / "cache")
    [broken] = catalog.broken
    assert broken.name == "app" and "lib" in broken.reason
    shutil.rmtree(tmp_path / "cache")


def test_a_declared_http_repository_is_read_as_named(
    tmp_path: Path, http_root: tuple[str, Path]
) -> None:
    """No mapping: the repository the chart names is read over HTTP (its index once per load)
    and the archive is cached."""
    url, served = http_root
    (served / "repo").mkdir()
    helm_python.package(_library(tmp_path / "src", "1.4.0"), destination=served / "repo")
    helm_python.repo_index_generate(served / "repo")
    root = tmp_path / "charts"
    _app(root, repository=f"{url}/repo")
    _app(root, repository=f"{url}/repo", directory="app-copy")
    config = CatalogConfig(id="lab", location=str(root))
    catalog = _load(config, tmp_path / "cache")
    assert [b.reason for b in catalog.broken] == [f"duplicate version 1.0.0 (also in {root}/app)"]
    assert "from: library" in _rendered(catalog.latest("app").path)
    (served / "repo" / "lib-1.4.0.tgz").unlink()  # the cached archive is enough from now on
    assert _load(config, tmp_path / "cache").latest("app").path == catalog.latest("app").path


def test_a_directory_of_vendored_archives_serves_dependencies(tmp_path: Path) -> None:
    """An administrator drops the archives charts need in a directory (no index.yaml) and
    maps the charts' repository to it."""
    vendored = tmp_path / "vendored"
    vendored.mkdir()
    helm_python.package(_library(tmp_path / "src", "1.5.0"), destination=vendored)
    (vendored / "notes.txt").write_text("not an archive")
    _app(tmp_path / "charts")
    config = CatalogConfig(
        id="lab", location=str(tmp_path / "charts"), repositories={UNREACHABLE: str(vendored)}
    )
    chart = _load(config, tmp_path / "cache").latest("app")
    assert "from: library" in _rendered(chart.path)

    # an archive whose name lies about its content is refused
    (vendored / "lib-1.5.0.tgz").rename(vendored / "lib-1.9.0.tgz")
    [broken] = _load(config, tmp_path / "cache2").broken
    assert "lib-1.9.0.tgz does not hold lib 1.9.0" in broken.reason
