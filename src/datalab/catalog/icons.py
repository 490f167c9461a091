"""Chart icons the platform serves itself, so that a catalog page never makes the browser fetch
anything from outside (a closed network cannot reach it, and an open one learns who browses).

Where a chart's icon comes from, first match wins:

1. an ``icon.svg`` (or ``icon.png``, ``icon.webp``, ``icon.jpg``, ``icon.gif``) next to its
   ``Chart.yaml``;
2. a ``Chart.yaml`` ``icon:`` that is a relative path inside the chart (``icon: assets/logo.png``);
3. a ``Chart.yaml`` ``icon:`` that is an ``http(s)`` URL (Onyxia's charts), downloaded at catalog
   load into the cache directory when the catalog allows it (``fetch_icons: true``) and reused
   afterwards;
4. otherwise none: the page shows a placeholder made of the chart's initials.

An icon is an image of at most :data:`MAX_ICON_BYTES` whose content is recognised (PNG, JPEG,
GIF, WebP, or SVG markup), whatever its name or the server's ``Content-Type`` says.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx

from datalab.catalog.repository import read_capped

log = logging.getLogger(__name__)

MAX_ICON_BYTES = 512 * 1024
FETCH_TIMEOUT_S = 10.0
RETRY_FAILED_AFTER_S = 3600.0  # a URL that failed is tried again at a refresh after this

#: file extension -> media type, in the order an ``icon.<ext>`` is looked for
ICON_TYPES = {
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".webp": "image/webp",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
}

_SVG_START = re.compile(
    rb"^(\xef\xbb\xbf)?\s*(<\?xml[^>]*\?>\s*)?((<!--.*?-->|<!DOCTYPE[^>]*>)\s*)*<svg[\s>]",
    re.DOTALL | re.IGNORECASE,
)


def sniff(data: bytes) -> str | None:
    """The extension of the image ``data`` holds (``.png``...), or None when it is no icon."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return ".png"
    if data.startswith(b"\xff\xd8\xff"):
        return ".jpg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return ".gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    if _SVG_START.match(data[:4096]):
        return ".svg"
    return None


def is_remote(icon: str | None) -> bool:
    return bool(icon) and urlparse(str(icon)).scheme in ("http", "https")


def local_icon(chart_dir: Path, icon: str | None) -> Path | None:
    """The chart's own icon file (cases 1 and 2 above), or None. A relative ``icon:`` must stay
    inside the chart (no ``..`` out of it, no link out of it) and be a recognised image."""
    root = chart_dir.resolve()
    candidates = [chart_dir / f"icon{ext}" for ext in ICON_TYPES]
    if icon and not urlparse(icon).scheme and not icon.startswith(("/", "\\")):
        candidates.append(chart_dir / icon)
    for candidate in candidates:
        try:
            resolved = candidate.resolve()
            if not resolved.is_relative_to(root) or not resolved.is_file():
                continue
            if resolved.stat().st_size > MAX_ICON_BYTES:
                log.warning(
                    "chart icon %s is larger than %d bytes: ignored", resolved, MAX_ICON_BYTES
                )
                continue
            with resolved.open("rb") as file:
                if sniff(file.read(4096)) is None:
                    log.warning(
                        "chart icon %s is not a PNG, JPEG, GIF, WebP or SVG image", resolved
                    )
                    continue
        except OSError:
            continue
        return resolved
    return None


def media_type(path: Path) -> str:
    """What to serve an icon file as: by its content (an ``icon:`` path may be misnamed)."""
    with path.open("rb") as file:
        ext = sniff(file.read(4096)) or path.suffix.lower()
    return ICON_TYPES.get(ext, "application/octet-stream")


class IconCache:
    """Remote icons downloaded into ``<cache dir>/icons/`` (one file per URL, named by its
    SHA-256), reused across refreshes and restarts. A URL that failed is not tried again for
    :data:`RETRY_FAILED_AFTER_S`; within one refresh, a host that cannot be reached is not
    asked again (a closed network costs one timeout per host, not per chart)."""

    def __init__(self, cache_dir: Path) -> None:
        self.directory = Path(cache_dir) / "icons"
        self._failed: dict[str, float] = {}
        self._lock = threading.Lock()

    def _stem(self, url: str) -> str:
        return hashlib.sha256(url.encode()).hexdigest()

    def cached(self, url: str) -> Path | None:
        """The downloaded icon of ``url``, if there is one (never downloads)."""
        stem = self._stem(url)
        for ext in ICON_TYPES:
            path = self.directory / f"{stem}{ext}"
            if path.is_file():
                return path
        return None

    def fetch(self, url: str, http: httpx.Client, unreachable: set[str]) -> Path | None:
        """The icon of ``url``, downloaded now if it is not cached yet; None when it cannot be
        had (the reason is logged). ``unreachable``: hosts that failed during this refresh."""
        found = self.cached(url)
        if found is not None:
            return found
        host = urlparse(url).netloc
        with self._lock:
            failed_at = self._failed.get(url)
        if host in unreachable or (
            failed_at is not None and time.monotonic() - failed_at < RETRY_FAILED_AFTER_S
        ):
            return None
        try:
            data = self._download(url, http)
        except httpx.TransportError as exc:
            unreachable.add(host)
            self._failure(url, f"{type(exc).__name__}: {exc}")
            return None
        except (httpx.HTTPError, ValueError) as exc:
            self._failure(url, str(exc))
            return None
        ext = sniff(data)
        if ext is None:
            self._failure(url, "not a PNG, JPEG, GIF, WebP or SVG image")
            return None
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{self._stem(url)}{ext}"
        partial = path.with_suffix(".part")
        partial.write_bytes(data)
        partial.replace(path)
        return path

    def _download(self, url: str, http: httpx.Client) -> bytes:
        with http.stream("GET", url, timeout=FETCH_TIMEOUT_S) as response:
            response.raise_for_status()
            body = read_capped(response, MAX_ICON_BYTES)
        if body is None:
            raise ValueError(f"larger than {MAX_ICON_BYTES} bytes")
        return body

    def _failure(self, url: str, reason: str) -> None:
        log.warning("chart icon %s could not be fetched (the initials are shown): %s", url, reason)
        with self._lock:
            self._failed[url] = time.monotonic()
