"""Helm repositories: reading their ``index.yaml`` and their chart archives (``.tgz``), from
``file://`` or ``http(s)://`` URLs, safely. Used for Helm-repository catalogs and for the
repositories charts' dependencies come from."""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urljoin, urlparse

import httpx
import yaml

from datalab.errors import CatalogError, ChartInvalid

MAX_ARCHIVE_BYTES = 50 * 1024 * 1024  # a chart archive; Onyxia's biggest are well under 1 MB
MAX_INDEX_BYTES = 100 * 1024 * 1024  # index.yaml of big public repositories is tens of MB


@dataclass(frozen=True)
class IndexEntry:
    """One chart version as announced by a Helm repository's ``index.yaml``."""

    name: str
    version: str
    url: str  # absolute URL of the .tgz
    digest: str | None  # sha256 hex of the archive, when the index gives one
    library: bool = False  # Chart.yaml's type is "library": a dependency, never launched


def without_password(location: str) -> str:
    """The location as shown to users: a password in the URL is masked."""
    parsed = urlparse(location)
    if parsed.password is None:
        return location
    netloc = f"{parsed.username}:********@{parsed.hostname}"
    netloc += f":{parsed.port}" if parsed.port else ""
    return parsed._replace(netloc=netloc).geturl()


def repository_base(location: str) -> str:
    """A Helm repository's base URL, ending in ``/``, from a URL, a ``file://`` URL or a path,
    with or without its trailing ``index.yaml``."""
    location = location.removesuffix("index.yaml") if location.endswith("/index.yaml") else location
    if not urlparse(location).scheme:
        location = Path(location).expanduser().resolve().as_uri()
    return location.rstrip("/") + "/"


def read_index(base: str, http: httpx.Client) -> dict[str, list[IndexEntry]]:
    """The entries of the repository at ``base`` (see :func:`repository_base`). A local
    directory of archives without an ``index.yaml`` (charts vendored by hand, as
    ``NAME-VERSION.tgz``) is read as the repository ``helm repo index`` would make of it."""
    parsed = urlparse(base)
    directory = Path(parsed.path)
    if parsed.scheme == "file" and directory.is_dir() and not (directory / "index.yaml").exists():
        return archive_entries(directory)
    return parse_index(read_url(base + "index.yaml", http, MAX_INDEX_BYTES), base)


_ARCHIVE_NAME = re.compile(r"^(?P<name>.+?)-(?P<version>v?[0-9]+(\.[0-9]+){0,2}([-+].*)?)\.tgz$")


def archive_entries(directory: Path) -> dict[str, list[IndexEntry]]:
    """``NAME-VERSION.tgz`` files of a directory as repository entries (no digest: the archive
    is checked by unpacking it, whose Chart.yaml must name that chart)."""
    entries: dict[str, list[IndexEntry]] = {}
    for archive in sorted(directory.glob("*.tgz")):
        match = _ARCHIVE_NAME.match(archive.name)
        if match:
            entry = IndexEntry(match["name"], match["version"], archive.resolve().as_uri(), None)
            entries.setdefault(entry.name, []).append(entry)
    return entries


def unpack_entry(entry: IndexEntry, cache_dir: Path, http: httpx.Client) -> Path:
    """The chart directory of one index entry, downloaded and unpacked under ``cache_dir``
    once (the archive's digest, when the index gives one, is checked)."""
    key = entry.digest or hashlib.sha256(entry.url.encode()).hexdigest()
    target = cache_dir / f"{entry.name}-{entry.version}-{key[:16]}"
    if not (target / ".complete").is_file():
        archive = read_url(entry.url, http, MAX_ARCHIVE_BYTES)
        if entry.digest and hashlib.sha256(archive).hexdigest() != entry.digest:
            raise ChartInvalid(
                f"chart {entry.name!r} {entry.version}: archive digest does not match index.yaml"
            )
        extract_chart_archive(archive, target, entry.name)
    return target / entry.name


def read_url(url: str, http: httpx.Client, limit: int) -> bytes:
    """Bytes at a file:// or http(s):// URL, refusing more than ``limit`` bytes."""
    parsed = urlparse(url)
    shown = without_password(url)
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
            body = read_capped(response, limit)
    except httpx.HTTPError as exc:
        raise CatalogError(f"cannot fetch {shown}: {exc}") from exc
    if body is None:
        raise CatalogError(f"{shown} is larger than {limit} bytes")
    return body


def read_capped(response: httpx.Response, limit: int) -> bytes | None:
    """The body of a streamed response, or None once it passes ``limit`` bytes (the rest is
    not read)."""
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def parse_index(text: bytes, base: str) -> dict[str, list[IndexEntry]]:
    """``index.yaml`` -> chart name -> entries. Raises :class:`CatalogError` if unusable."""
    try:
        # public repositories' indexes run to megabytes: use libyaml when it is there
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506
    except yaml.YAMLError as exc:
        raise CatalogError(f"{without_password(base)}index.yaml is not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("entries"), dict):
        raise CatalogError(
            f"{without_password(base)}index.yaml has no 'entries' mapping: not a Helm repository"
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
                    library=raw.get("type") == "library",
                )
            )
        entries.setdefault(str(name), [])
    return entries


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
