"""A chart's dependencies (``Chart.yaml``'s ``dependencies``), resolved as ``helm dependency
build`` would before Helm renders the chart.

Each dependency is taken from the first of:

1. the chart's own ``charts/`` directory (vendored: an unpacked chart, or ``NAME-VERSION.tgz``);
2. a ``file://`` repository: a chart directory relative to the chart, inside its catalog;
3. the catalog itself: one of its charts with that name and a matching version (Onyxia's
   ``library-chart`` sits beside the charts that use it);
4. the Helm repository that the catalog's ``repositories`` setting maps the dependency's
   repository to (a mirror, a local copy on a closed network, or a directory of vendored
   ``NAME-VERSION.tgz`` archives), else the dependency's own ``http(s)://`` repository.

A chart whose dependencies are all vendored is used as it is. Otherwise a copy of it, with the
missing ones unpacked in its ``charts/``, is built in the cache (a catalog's directory is never
written to). A dependency found nowhere makes the chart broken, with what was tried.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import yaml

from datalab.catalog.chart import directory_digest
from datalab.catalog.repository import (
    IndexEntry,
    read_index,
    repository_base,
    unpack_entry,
    without_password,
)
from datalab.catalog.versions import satisfies, version_key
from datalab.errors import CatalogError, ChartInvalid


@dataclass(frozen=True)
class Dependency:
    """One entry of ``Chart.yaml``'s ``dependencies``."""

    name: str
    version: str  # a Helm version constraint ("2.1.7", "^2.1.0", "*")
    repository: str  # "" (vendored only), file://..., http(s)://..., oci://..., @alias

    def __str__(self) -> str:
        return f"{self.name} {self.version}"


#: where a catalog finds a dependency among its own charts: a chart directory, or None
CatalogLookup = Callable[[Dependency], Path | None]


def declared_dependencies(metadata: Mapping[str, Any], chart: str) -> list[Dependency]:
    """The dependencies ``Chart.yaml`` declares; :class:`ChartInvalid` when malformed."""
    raw = metadata.get("dependencies")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ChartInvalid(f"chart {chart!r}: Chart.yaml 'dependencies' must be a list")
    found = []
    for index, item in enumerate(raw):
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str) or not name:
            raise ChartInvalid(f"chart {chart!r}: Chart.yaml dependencies[{index}] has no 'name'")
        version = "*" if item.get("version") in (None, "") else str(item["version"])
        try:
            satisfies("0.0.0", version)  # a constraint Helm could not read either
        except ChartInvalid as exc:
            raise ChartInvalid(f"chart {chart!r}: dependency {name!r}: {exc.message}") from None
        found.append(Dependency(name, version, str(item.get("repository") or "")))
    return found


def newest_matching(
    dependency: Dependency, candidates: Mapping[str, Any]
) -> tuple[str, Any] | None:
    """The newest ``(version, candidate)`` of ``{version: candidate}`` the dependency accepts."""
    for version in sorted(candidates, key=version_key, reverse=True):
        if satisfies(version, dependency.version):
            return version, candidates[version]
    return None


class DependencyResolver:
    """Completes charts with their dependencies, for one load of one catalog.

    ``catalog``: finds a dependency among the catalog's own charts. ``repositories``: the
    catalog's map of repository URLs (as charts name them) to the Helm repositories to use.
    ``cache_dir``: the catalog's cache (built charts, downloaded dependencies). ``root``: where
    ``file://`` dependencies may be (the catalog's directory, or the unpacked archive): a chart
    cannot pull in other directories of the machine.
    """

    def __init__(
        self,
        catalog: CatalogLookup,
        repositories: Mapping[str, str],
        cache_dir: Path,
        http: httpx.Client,
        root: Path,
    ) -> None:
        self.catalog = catalog
        self.root = root.resolve()
        self.repositories = {k.rstrip("/"): v for k, v in repositories.items()}
        self.cache_dir = cache_dir
        self.http = http
        self._indexes: dict[str, dict[str, list[IndexEntry]] | CatalogError] = {}

    def complete(self, chart_dir: Path, metadata: Mapping[str, Any], digest: str) -> Path:
        """The directory Helm renders the chart from: ``chart_dir`` when nothing is missing,
        else a built copy. Raises :class:`ChartInvalid` naming a dependency found nowhere."""
        chart = str(metadata.get("name") or chart_dir.name)
        missing = [d for d in declared_dependencies(metadata, chart) if not _vendored(chart_dir, d)]
        if not missing:
            return chart_dir
        found = [(dependency, self._find(chart_dir, chart, dependency)) for dependency in missing]
        return self._build(chart_dir, digest, found)

    # ---------------------------------------------------------------- finding

    def _find(self, chart_dir: Path, chart: str, dependency: Dependency) -> Path:
        repository = dependency.repository
        if repository.startswith("file://"):
            path = (chart_dir / repository.removeprefix("file://")).resolve()
            if not path.is_relative_to(self.root):
                raise ChartInvalid(
                    f"chart {chart!r}: dependency {dependency} at {repository} is outside its "
                    f"catalog ({self.root}): vendor it in the chart's charts/ instead"
                )
            if _chart_version(path, dependency) is None:
                raise ChartInvalid(
                    f"chart {chart!r}: dependency {dependency} is not at {repository} "
                    f"({path} holds no chart {dependency.name!r} of a matching version)"
                )
            return path
        found = self.catalog(dependency)
        if found is not None:
            return found
        tried = "not in its charts/ directory nor in this catalog"
        mapped = self.repositories.get(repository.rstrip("/"))
        location = mapped or repository
        if not location:
            raise ChartInvalid(f"chart {chart!r}: dependency {dependency} is missing: {tried}")
        if urlparse(location).scheme not in ("http", "https", "file", ""):
            raise ChartInvalid(
                f"chart {chart!r}: dependency {dependency} from {without_password(location)}: "
                f"{tried}, and only http(s):// and file:// Helm repositories are read; vendor it "
                "in the chart's charts/ or map its repository in the catalog's 'repositories'"
            )
        if not mapped and not urlparse(location).scheme:  # e.g. "@stable": a local repo name
            raise ChartInvalid(
                f"chart {chart!r}: dependency {dependency} from repository {location!r}: {tried}; "
                "map that repository to a URL in the catalog's 'repositories'"
            )
        try:
            return self._from_repository(repository_base(location), dependency)
        except CatalogError as exc:
            raise ChartInvalid(
                f"chart {chart!r}: dependency {dependency} is missing: {tried}, and {exc.message}"
            ) from exc

    def _from_repository(self, base: str, dependency: Dependency) -> Path:
        index = self._indexes.get(base)
        if index is None:
            try:
                index = read_index(base, self.http)
            except CatalogError as exc:
                index = exc
            self._indexes[base] = index  # one attempt per load, not one per chart
        if isinstance(index, CatalogError):
            raise index
        shown = without_password(base)
        entries = {e.version: e for e in index.get(dependency.name, [])}
        match = newest_matching(dependency, entries)
        if match is None:
            versions = ", ".join(sorted(entries, key=version_key, reverse=True)) or "none"
            raise CatalogError(f"{shown} has no matching version (versions: {versions})")
        key = hashlib.sha256(base.encode()).hexdigest()[:16]
        path = unpack_entry(match[1], self.cache_dir / "dependencies" / key, self.http)
        if _chart_version(path, dependency) != match[0]:
            raise CatalogError(f"{match[1].url} does not hold {dependency.name} {match[0]}")
        return path

    # ---------------------------------------------------------------- building

    def _build(self, chart_dir: Path, digest: str, found: list[tuple[Dependency, Path]]) -> Path:
        key = hashlib.sha256(digest.encode())
        for dependency, path in found:
            key.update(f"\0{dependency.name}\0{directory_digest(path)}".encode())
        home = self.cache_dir / "built" / chart_dir.name
        target = home / key.hexdigest()[:16]
        if (target / ".complete").is_file():
            return target / chart_dir.name
        home.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".build-", dir=home))
        try:
            built = staging / chart_dir.name
            shutil.copytree(chart_dir, built)
            charts = built / "charts"
            charts.mkdir(exist_ok=True)
            for dependency, path in found:
                for stale in charts.glob(f"{dependency.name}-*.tgz"):  # a mismatched version
                    stale.unlink()
                shutil.rmtree(charts / dependency.name, ignore_errors=True)
                shutil.copytree(path, charts / dependency.name)
            (staging / ".complete").touch()
            for old in home.iterdir():  # earlier builds of this chart, or this one half-made
                if old != staging and not old.name.startswith("."):
                    shutil.rmtree(old, ignore_errors=True)
            staging.rename(target)
        except OSError as exc:
            raise ChartInvalid(
                f"chart {chart_dir.name!r}: cannot build it with its dependencies: {exc}"
            ) from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target / chart_dir.name


def _vendored(chart_dir: Path, dependency: Dependency) -> bool:
    """Whether ``charts/`` holds the dependency (directory or ``NAME-VERSION.tgz``)."""
    charts = chart_dir / "charts"
    if not charts.is_dir():
        return False
    for entry in charts.iterdir():
        if entry.is_dir() and _chart_version(entry, dependency) is not None:
            return True
        prefix = f"{dependency.name}-"
        if entry.is_file() and entry.name.startswith(prefix) and entry.name.endswith(".tgz"):
            version = entry.name.removeprefix(prefix).removesuffix(".tgz")
            if satisfies(version, dependency.version):
                return True
    return False


def _chart_version(path: Path, dependency: Dependency) -> str | None:
    """The version of the chart at ``path`` when it is the dependency in a matching version."""
    metadata = read_chart_metadata(path)
    if metadata is None or metadata.get("name") != dependency.name:
        return None
    version = str(metadata.get("version", ""))
    return version if satisfies(version, dependency.version) else None


def read_chart_metadata(path: Path) -> dict[str, Any] | None:
    """``Chart.yaml`` of a chart directory, or None when there is no readable one (the chart's
    own load reports why)."""
    try:
        data = yaml.safe_load((path / "Chart.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None
