"""Loading one catalog from its source: a directory of charts, or a Helm repository.

Everything here is synchronous and does blocking I/O; the registry runs it in a worker thread
so that the event loop (and readers of the current snapshot) never wait for it.
"""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import tarfile
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any
from urllib.parse import urljoin, urlparse

import httpx
import yaml

from datalab.catalog import helm_check
from datalab.catalog.chart import (
    BrokenChart,
    Chart,
    directory_digest,
    load_chart_dir,
    looks_like_chart,
)
from datalab.catalog.config import CatalogConfig
from datalab.errors import CatalogError, ChartInvalid

MAX_ARCHIVE_BYTES = 50 * 1024 * 1024  # a chart archive; Onyxia's biggest are well under 1 MB
MAX_INDEX_BYTES = 100 * 1024 * 1024  # index.yaml of big public repositories is tens of MB
HTTP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class IndexEntry:
    """One chart version as announced by a Helm repository's ``index.yaml``."""

    name: str
    version: str
    url: str  # absolute URL of the .tgz
    digest: str | None  # sha256 hex of the archive, when the index gives one


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
        return self.config.description

    @property
    def highlighted(self) -> list[str]:
        return [name for name in self.config.highlighted if name in self.charts]

    def chart_names(self) -> list[str]:
        """Highlighted charts first (in the configured order), then the others by name."""
        highlighted = self.highlighted
        return highlighted + sorted(n for n in self.charts if n not in highlighted)

    def latest(self, name: str) -> Chart:
        return self.charts[name][0]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "location": _without_password(self.config.location),
            "type": self.config.resolved_type(),
            "highlighted": self.highlighted,
            "charts": [self.latest(n).summary() for n in self.chart_names()],
            "broken": [b.to_json() for b in self.broken],
            "loaded_at": self.loaded_at.isoformat() if self.loaded_at else None,
            "error": self.error,
        }


def _without_password(location: str) -> str:
    """The location as shown to users: a password in the URL is masked."""
    parsed = urlparse(location)
    if parsed.password is None:
        return location
    netloc = f"{parsed.username}:********@{parsed.hostname}"
    netloc += f":{parsed.port}" if parsed.port else ""
    return parsed._replace(netloc=netloc).geturl()


def version_key(version: str) -> tuple[Any, ...]:
    """Semantic-version order (pre-releases before the release); odd strings sort last."""
    match = re.match(r"^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:-([0-9A-Za-z.-]+))?(?:\+.*)?$", version)
    if not match:
        return (-1, version)
    major, minor, patch, pre = match.groups()
    release = (int(major), int(minor or 0), int(patch or 0))
    if pre is None:
        return (0, release, 1, ())
    identifiers = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
    return (0, release, 0, identifiers)


def load_catalog(config: CatalogConfig, cache_dir: Path, http: httpx.Client) -> Catalog:
    """Load a whole catalog. Raises :class:`CatalogError` when the source itself is unusable;
    a bad chart only ends up in ``Catalog.broken``."""
    if config.resolved_type() == "helm":
        return _load_helm_repository(config, cache_dir, http)
    return _load_directory(config)


def _load_directory(config: CatalogConfig) -> Catalog:
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
    digests = {d: directory_digest(d) for d in directories if (d / "Chart.yaml").is_file()}
    # Helm's checks of the new charts in one child process; load_chart_dir then finds them
    helm_check.checked(list(digests.items()))
    for directory in directories:
        try:
            chart = load_chart_dir(directory, config.id, digest=digests.get(directory))
        except ChartInvalid as exc:
            if config.accepts(directory.name):
                broken.append(BrokenChart(directory.name, exc.message, path=directory))
            continue
        if config.accepts(chart.name):
            loaded.append(chart)
    return _assemble(config, loaded, broken, {})


def _assemble(
    config: CatalogConfig,
    loaded: Iterable[Chart],
    broken: list[BrokenChart],
    index: dict[tuple[str, str], IndexEntry],
) -> Catalog:
    by_name: dict[str, list[Chart]] = {}
    for chart in loaded:
        same = by_name.setdefault(chart.name, [])
        if any(c.version == chart.version for c in same):
            broken.append(
                BrokenChart(
                    chart.name,
                    f"duplicate version {chart.version} (also in {same[0].path})",
                    chart.version,
                    chart.path,
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
        loaded_at=datetime.now(UTC),
    )


# ---------------------------------------------------------------------------------------------
# Helm repositories


def _repository_base(config: CatalogConfig) -> str:
    location = config.location
    if location.endswith("/index.yaml"):
        location = location.removesuffix("index.yaml")
    if not urlparse(location).scheme:
        location = Path(location).expanduser().resolve().as_uri()
    return location.rstrip("/") + "/"


def read_url(url: str, http: httpx.Client, limit: int) -> bytes:
    """Bytes at a file:// or http(s):// URL, refusing more than ``limit`` bytes."""
    parsed = urlparse(url)
    shown = _without_password(url)
    if parsed.scheme == "file":
        path = Path(parsed.path)
        try:
            if path.stat().st_size > limit:
                raise CatalogError(f"{shown} is larger than {limit} bytes")
            return path.read_bytes()
        except OSError as exc:
            raise CatalogError(f"cannot read {shown}: {exc.strerror or exc}") from exc
    if parsed.scheme not in ("http", "https"):
        raise CatalogError(f"unsupported URL {shown!r}: use file://, http:// or https://")
    try:
        with http.stream("GET", url) as response:
            if response.status_code != 200:
                raise CatalogError(f"GET {shown} answered HTTP {response.status_code}")
            chunks, size = [], 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > limit:
                    raise CatalogError(f"{shown} is larger than {limit} bytes")
                chunks.append(chunk)
            return b"".join(chunks)
    except httpx.HTTPError as exc:
        raise CatalogError(f"cannot fetch {shown}: {exc}") from exc


def parse_index(text: bytes, base: str) -> dict[str, list[IndexEntry]]:
    """``index.yaml`` -> chart name -> entries. Raises :class:`CatalogError` if unusable."""
    try:
        # public repositories' indexes run to megabytes: use libyaml when it is there
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506
    except yaml.YAMLError as exc:
        raise CatalogError(f"{_without_password(base)}index.yaml is not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("entries"), dict):
        raise CatalogError(
            f"{_without_password(base)}index.yaml has no 'entries' mapping: not a Helm repository"
        )
    entries: dict[str, list[IndexEntry]] = {}
    for name, versions in data["entries"].items():
        for raw in versions if isinstance(versions, list) else []:
            if not isinstance(raw, dict) or not raw.get("urls") or raw.get("version") is None:
                continue  # the chart is reported broken below when none of its entries is usable
            digest = raw.get("digest")
            entries.setdefault(str(name), []).append(
                IndexEntry(
                    name=str(name),
                    version=str(raw["version"]),
                    url=urljoin(base, str(raw["urls"][0])),
                    digest=str(digest).removeprefix("sha256:") if digest else None,
                )
            )
        entries.setdefault(str(name), [])
    return entries


def _load_helm_repository(config: CatalogConfig, cache_dir: Path, http: httpx.Client) -> Catalog:
    base = _repository_base(config)
    entries = parse_index(read_url(base + "index.yaml", http, MAX_INDEX_BYTES), base)
    loaded: list[Chart] = []
    broken: list[BrokenChart] = []
    index: dict[tuple[str, str], IndexEntry] = {}
    for name, versions in sorted(entries.items()):
        if not config.accepts(name):
            continue
        if not versions:
            broken.append(BrokenChart(name, "index.yaml lists no usable version (urls/version)"))
            continue
        versions = sorted(versions, key=lambda e: version_key(e.version), reverse=True)
        index.update({(name, e.version): e for e in versions})
        # Only the newest version is fetched now; older ones on demand (fetch_chart_version).
        try:
            loaded.append(fetch_chart_version(config, versions[0], cache_dir, http))
        except CatalogError as exc:
            broken.append(BrokenChart(name, exc.message, versions[0].version))
    return _assemble(config, loaded, broken, index)


def fetch_chart_version(
    config: CatalogConfig, entry: IndexEntry, cache_dir: Path, http: httpx.Client
) -> Chart:
    """Download (or reuse from the cache), unpack and load one chart version."""
    key = entry.digest or hashlib.sha256(entry.url.encode()).hexdigest()
    target = cache_dir / config.id / f"{entry.name}-{entry.version}-{key[:16]}"
    chart_dir = target / entry.name
    if not (target / ".complete").is_file():
        archive = read_url(entry.url, http, MAX_ARCHIVE_BYTES)
        if entry.digest and hashlib.sha256(archive).hexdigest() != entry.digest:
            raise ChartInvalid(
                f"chart {entry.name!r} {entry.version}: archive digest does not match index.yaml"
            )
        extract_chart_archive(archive, target, entry.name)
    chart = load_chart_dir(chart_dir, config.id)
    if chart.name != entry.name or chart.version != entry.version:
        raise ChartInvalid(
            f"chart {entry.name!r} {entry.version}: archive contains {chart.name} {chart.version}"
        )
    return chart


def extract_chart_archive(archive: bytes, target: Path, chart_name: str) -> None:
    """Unpack a chart ``.tgz`` into ``target/<chart_name>/``, refusing anything unsafe.

    Only regular files and directories under ``<chart_name>/`` are accepted: absolute paths,
    ``..``, links and devices raise :class:`ChartInvalid`. Extraction goes to a temporary
    directory renamed into place, so a half-written chart is never used.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        tar = tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz")  # noqa: SIM115 - closed below
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ChartInvalid(f"chart {chart_name!r}: not a .tgz archive: {exc}") from exc
    staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=target.parent))
    try:
        with tar:
            members = tar.getmembers()
            for member in members:
                _check_member(member, chart_name)
            tar.extractall(staging, members=members, filter="data")
        if not (staging / chart_name / "Chart.yaml").is_file():
            raise ChartInvalid(f"chart {chart_name!r}: archive has no {chart_name}/Chart.yaml")
        (staging / ".complete").touch()
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ChartInvalid(f"chart {chart_name!r}: cannot unpack archive: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_member(member: tarfile.TarInfo, chart_name: str) -> None:
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts or (path.parts and path.parts[0] != chart_name):
        raise ChartInvalid(
            f"chart {chart_name!r}: archive entry {member.name!r} is outside {chart_name}/ "
            "(path traversal refused)"
        )
    if not (member.isfile() or member.isdir()):
        raise ChartInvalid(
            f"chart {chart_name!r}: archive entry {member.name!r} is a link or special file"
        )
