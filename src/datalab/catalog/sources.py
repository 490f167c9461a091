"""Loading one catalog from its source: a directory of charts, or a Helm repository.

Everything here is synchronous and does blocking I/O; the registry runs it in a worker thread
so that the event loop (and readers of the current snapshot) never wait for it.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlparse

import httpx
from pydantic import BaseModel, Field

from datalab.catalog import helm_check
from datalab.catalog.chart import (
    BrokenChart,
    BrokenChartOut,
    Chart,
    ChartSummary,
    directory_digest,
    load_chart_dir,
    looks_like_chart,
)
from datalab.catalog.config import CatalogConfig, CatalogType
from datalab.catalog.dependencies import (
    Dependency,
    DependencyResolver,
    newest_matching,
    read_chart_metadata,
)
from datalab.catalog.overlays import with_overlay
from datalab.catalog.repository import (
    IndexEntry,
    read_index,
    repository_base,
    unpack_entry,
    without_password,
)
from datalab.catalog.versions import version_key
from datalab.errors import CatalogError, ChartInvalid

HTTP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class HelmSource:
    """How the ``helm`` command line names a chart: ``setup`` (a command to run first, or "")
    then ``helm upgrade --install RELEASE <ref>``."""

    ref: str
    setup: str = ""


@dataclass(frozen=True)
class Catalog:
    """An immutable snapshot of one catalog. Refreshes build a new one and swap it in."""

    config: CatalogConfig
    charts: MappingProxyType[str, tuple[Chart, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )  # name -> loaded versions, newest first
    versions: MappingProxyType[str, tuple[str, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )  # name -> every version the source offers, newest first
    broken: tuple[BrokenChart, ...] = ()
    index: MappingProxyType[tuple[str, str], IndexEntry] = field(
        default_factory=lambda: MappingProxyType({})
    )  # helm repositories: (name, version) -> archive, for versions fetched on demand
    libraries: tuple[str, ...] = ()  # library charts: dependencies of others, never listed
    loaded_at: datetime | None = None
    error: str | None = None  # why the last refresh failed (this snapshot is older)

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def name(self) -> str:
        return self.config.display_name

    @property
    def description(self) -> str:
        return self.config.description_in("en")

    @property
    def highlighted(self) -> list[str]:
        return [name for name in self.config.highlighted if name in self.charts]

    def chart_names(self) -> list[str]:
        """Highlighted charts first (in the configured order), then the others by name."""
        highlighted = self.highlighted
        return highlighted + sorted(n for n in self.charts if n not in highlighted)

    def latest(self, name: str) -> Chart:
        return self.charts[name][0]

    def helm_source(self, chart: Chart) -> HelmSource:
        """What a user types to install ``chart`` with ``helm`` from this catalog: an
        http(s) repository is added, then named ``<catalog>/<chart>``; a repository on disk
        has no ``helm repo add`` (Helm reads only http(s) repositories), its archive is named;
        a chart directory is named, after ``helm dependency build`` when it has dependencies."""
        if self.config.resolved_type() == "helm":
            if self.config.is_remote():
                url = without_password(repository_base(self.config.location)).rstrip("/")
                return HelmSource(
                    f"{self.id}/{chart.name}", shlex.join(["helm", "repo", "add", self.id, url])
                )
            entry = self.index.get((chart.name, chart.version))
            if entry is not None:
                parsed = urlparse(entry.url)
                return HelmSource(parsed.path if parsed.scheme == "file" else entry.url)
        directory = str(chart.source or chart.path)
        if chart.metadata.get("dependencies"):
            return HelmSource(directory, shlex.join(["helm", "dependency", "build", directory]))
        return HelmSource(directory)

    def listing(self) -> CatalogListing:
        """What the API and the catalog page show of it: its charts' newest versions, highlighted
        first, and the charts that could not be loaded."""
        config = self.config
        return CatalogListing(
            id=self.id,
            name=self.name,
            description=self.description,
            translations=CatalogTranslations(
                name=config.name if isinstance(config.name, dict) else {},
                description=config.description if isinstance(config.description, dict) else {},
            ),
            location=without_password(config.location),
            type=config.resolved_type(),
            highlighted=self.highlighted,
            charts=[ChartSummary.model_validate(self.latest(n)) for n in self.chart_names()],
            broken=[BrokenChartOut.model_validate(b) for b in self.broken],
            libraries=list(self.libraries),
            loaded_at=self.loaded_at.isoformat() if self.loaded_at else None,
            error=self.error,
        )

    def to_json(self) -> dict[str, Any]:
        """:meth:`listing` as plain JSON (for the web pages)."""
        return self.listing().model_dump(mode="json")


class CatalogTranslations(BaseModel):
    """A catalog's texts in other languages, when its configuration gives them (Onyxia's
    LocalizedString): language code -> text."""

    name: dict[str, str]
    description: dict[str, str]


class CatalogListing(BaseModel):
    """A catalog as listings show it."""

    id: str
    name: str = Field(description="Display name (English when the configuration translates it).")
    description: str
    translations: CatalogTranslations
    location: str = Field(description="Where it is loaded from (any password in it removed).")
    type: CatalogType = Field(description="A directory of charts, or a Helm repository.")
    highlighted: list[str] = Field(description="Charts shown first, in this order.")
    charts: list[ChartSummary] = Field(
        description="The newest version of each chart: highlighted first, then by name."
    )
    broken: list[BrokenChartOut] = Field(description="Charts that could not be loaded, and why.")
    libraries: list[str] = Field(
        description="Library charts: dependencies of others, never launched."
    )
    loaded_at: str | None = Field(description="When it was last loaded (ISO 8601).")
    error: str | None = Field(
        description="Why its last refresh failed (this listing is from the load before)."
    )


def load_catalog(config: CatalogConfig, cache_dir: Path, http: httpx.Client) -> Catalog:
    """Load a whole catalog. Raises :class:`CatalogError` when the source itself is unusable;
    a bad chart only ends up in ``Catalog.broken``."""
    if config.resolved_type() == "helm":
        return _load_helm_repository(config, cache_dir, http)
    return _load_directory(config, cache_dir, http)


def _is_library(metadata: Mapping[str, Any] | None) -> bool:
    """Library charts only lend templates to others: Helm cannot install them, Onyxia hides
    them, and so do we (they stay available as dependencies)."""
    return metadata is not None and metadata.get("type") == "library"


def _load_directory(config: CatalogConfig, cache_dir: Path, http: httpx.Client) -> Catalog:
    root = config.local_path()
    if not root.is_dir():
        raise CatalogError(f"catalog {config.id!r}: {root} is not a directory")
    loaded: list[Chart] = []
    broken: list[BrokenChart] = []
    directories = [
        p
        for p in sorted(root.iterdir())
        if p.is_dir() and not p.name.startswith(".") and looks_like_chart(p)
    ]
    metadata = {d: read_chart_metadata(d) for d in directories}
    libraries = sorted(str(m["name"]) for m in metadata.values() if m and _is_library(m))
    # every chart of the catalog, libraries included, by name and version: for dependencies
    own: dict[str, dict[str, Path]] = {}
    for directory, meta in metadata.items():
        if meta and isinstance(meta.get("name"), str) and meta.get("version") is not None:
            own.setdefault(meta["name"], {})[str(meta["version"])] = directory

    def in_catalog(dependency: Dependency) -> Path | None:
        match = newest_matching(dependency, own.get(dependency.name, {}))
        return match[1] if match else None

    resolver = DependencyResolver(
        in_catalog, config.repositories, cache_dir / config.id, http, root=root
    )
    rendered: dict[Path, tuple[Path, str]] = {}  # chart directory -> (directory Helm reads, digest)
    for directory in directories:
        meta = metadata[directory]
        if _is_library(meta) or meta is None:
            continue  # a missing or unreadable Chart.yaml is reported by load_chart_dir
        digest = directory_digest(directory)
        try:
            path = resolver.complete(directory, meta, digest)
            path = with_overlay(config, str(meta.get("name", directory.name)), path, cache_dir)
        except ChartInvalid as exc:
            if config.accepts(directory.name):
                broken.append(BrokenChart(directory.name, exc.message, path=directory))
            continue
        rendered[directory] = (path, digest if path == directory else directory_digest(path))
    digests = dict(rendered.values())
    # Helm's checks of the new charts in one child process; load_chart_dir then finds them
    helm_check.checked(list(digests.items()))
    for directory in directories:
        if _is_library(metadata[directory]) or (
            metadata[directory] is not None and directory not in rendered
        ):
            continue
        path = rendered.get(directory, (directory, ""))[0]
        try:
            chart = load_chart_dir(path, config.id, digest=digests.get(path))
        except ChartInvalid as exc:
            if config.accepts(directory.name):
                broken.append(BrokenChart(directory.name, exc.message, path=directory))
            continue
        if config.accepts(chart.name):
            loaded.append(chart if path == directory else replace(chart, source=directory))
    return _assemble(config, loaded, broken, {}, libraries)


def _assemble(
    config: CatalogConfig,
    loaded: Iterable[Chart],
    broken: list[BrokenChart],
    index: dict[tuple[str, str], IndexEntry],
    libraries: Iterable[str] = (),
) -> Catalog:
    by_name: dict[str, list[Chart]] = {}
    for chart in loaded:
        same = by_name.setdefault(chart.name, [])
        if any(c.version == chart.version for c in same):
            broken.append(
                BrokenChart(
                    chart.name,
                    f"duplicate version {chart.version} (also in {same[0].source or same[0].path})",
                    chart.version,
                    chart.source or chart.path,
                )
            )
            continue
        same.append(chart)
    all_versions: dict[str, set[str]] = {n: {c.version for c in cs} for n, cs in by_name.items()}
    for name, version in index:
        if name in all_versions:
            all_versions[name].add(version)
    versions = {
        name: tuple(sorted(found, key=version_key, reverse=True))
        for name, found in all_versions.items()
    }
    charts = {
        name: tuple(
            replace(c, versions=versions[name])
            for c in sorted(cs, key=lambda c: version_key(c.version), reverse=True)
        )
        for name, cs in by_name.items()
    }
    return Catalog(
        config=config,
        charts=MappingProxyType(charts),
        versions=MappingProxyType(versions),
        broken=tuple(sorted(broken, key=lambda b: (b.name, b.version or ""))),
        index=MappingProxyType(index),
        libraries=tuple(sorted(set(libraries))),
        loaded_at=datetime.now(UTC),
    )


# ---------------------------------------------------------------------------------------------
# Helm repositories


def _load_helm_repository(config: CatalogConfig, cache_dir: Path, http: httpx.Client) -> Catalog:
    entries = read_index(repository_base(config.location), http)
    loaded: list[Chart] = []
    broken: list[BrokenChart] = []
    index: dict[tuple[str, str], IndexEntry] = {}
    libraries: list[str] = []
    for versions in entries.values():  # every entry, libraries too: dependencies come from it
        index.update({(e.name, e.version): e for e in versions})
    for name, versions in sorted(entries.items()):
        versions = sorted(versions, key=lambda e: version_key(e.version), reverse=True)
        if versions and versions[0].library:
            libraries.append(name)
            continue
        if not config.accepts(name):
            continue
        if not versions:
            broken.append(BrokenChart(name, "index.yaml lists no usable version (urls/version)"))
            continue
        # Only the newest version is fetched now; older ones on demand (fetch_chart_version).
        try:
            loaded.append(fetch_chart_version(config, versions[0], cache_dir, http, index))
        except CatalogError as exc:
            broken.append(BrokenChart(name, exc.message, versions[0].version))
    return _assemble(config, loaded, broken, index, libraries)


def fetch_chart_version(
    config: CatalogConfig,
    entry: IndexEntry,
    cache_dir: Path,
    http: httpx.Client,
    index: Mapping[tuple[str, str], IndexEntry],
) -> Chart:
    """Download (or reuse from the cache), unpack and load one chart version of a Helm
    repository whose entries are ``index`` (where its dependencies are looked for first)."""
    chart_dir = unpack_entry(entry, cache_dir / config.id, http)

    def in_catalog(dependency: Dependency) -> Path | None:
        versions = {v: e for (n, v), e in index.items() if n == dependency.name}
        match = newest_matching(dependency, versions)
        return unpack_entry(match[1], cache_dir / config.id, http) if match else None

    metadata = read_chart_metadata(chart_dir) or {}
    resolver = DependencyResolver(
        in_catalog, config.repositories, cache_dir / config.id, http, root=chart_dir.parent
    )
    path = resolver.complete(chart_dir, metadata, directory_digest(chart_dir))
    path = with_overlay(config, entry.name, path, cache_dir)
    chart = load_chart_dir(path, config.id)
    if chart.name != entry.name or chart.version != entry.version:
        raise ChartInvalid(
            f"chart {entry.name!r} {entry.version}: archive contains {chart.name} {chart.version}"
        )
    return chart
