"""The catalog registry: every configured catalog, refreshed without blocking readers.

Readers (:meth:`CatalogRegistry.catalogs`, :meth:`CatalogRegistry.get_chart`) read an immutable
mapping of :class:`Catalog` snapshots. A refresh loads a catalog in a worker thread, then swaps
the mapping in one assignment. When a refresh fails, the last good snapshot stays in place and
carries the error (``Catalog.error``) so that the UI and ``datalab catalog list`` can show it.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

import httpx

from datalab.catalog.chart import Chart
from datalab.catalog.config import CatalogConfig
from datalab.catalog.icons import IconCache, is_remote
from datalab.catalog.schema import SchemaRegistry
from datalab.catalog.sources import HTTP_TIMEOUT_S, Catalog, fetch_chart_version, load_catalog
from datalab.errors import CatalogError, ChartInvalid, ChartNotFound

log = logging.getLogger(__name__)


class CatalogRegistry:
    """All catalogs of the platform.

    ``schema_dirs`` hold instance-specific schema fragments that take precedence over the
    shipped ``catalog/schemas/`` (first directory wins).
    """

    def __init__(
        self,
        configs: Sequence[CatalogConfig],
        cache_dir: Path,
        schema_dirs: Sequence[Path] = (),
    ) -> None:
        ids = [c.id for c in configs]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise CatalogError(f"catalog ids must be unique; repeated: {', '.join(duplicates)}")
        self.configs = list(configs)
        self.cache_dir = Path(cache_dir)
        self.schemas = SchemaRegistry.with_overrides(list(schema_dirs))
        self._catalogs: MappingProxyType[str, Catalog] = MappingProxyType(
            {c.id: Catalog(config=c) for c in configs}
        )
        self._swap_lock = threading.Lock()  # serialises writers; readers never take it
        # one download/unpack into the cache directory at a time (refreshes, on-demand versions)
        self._fetch_lock = threading.RLock()
        self._refresh_locks: dict[str, asyncio.Lock] = {}
        self._on_demand: dict[tuple[str, str, str], Chart] = {}  # older helm versions fetched
        self._tasks: list[asyncio.Task[None]] = []
        self.icons = IconCache(self.cache_dir)

    # ---------------------------------------------------------------- reading

    def catalogs(self) -> list[Catalog]:
        """Current snapshots, in configuration order."""
        snapshot = self._catalogs
        return [snapshot[c.id] for c in self.configs]

    def catalog(self, catalog_id: str) -> Catalog:
        snapshot = self._catalogs
        if catalog_id not in snapshot:
            raise ChartNotFound(
                f"no catalog {catalog_id!r}{_suggest(catalog_id, snapshot)}; "
                f"catalogs: {', '.join(snapshot) or '(none configured)'}"
            )
        return snapshot[catalog_id]

    def get_chart(self, catalog_id: str, name: str, version: str | None = None) -> Chart:
        """One chart version (the newest by default).

        Raises :class:`ChartNotFound` (unknown catalog, chart or version; the message lists
        what exists) or :class:`ChartInvalid` (the chart is broken; the message says why).
        An older version of a Helm-repository chart is downloaded on first use.
        """
        catalog = self.catalog(catalog_id)
        versions = catalog.charts.get(name)
        if versions is None:
            if name in catalog.libraries:
                raise ChartNotFound(
                    f"chart {name!r} in catalog {catalog_id!r} is a library chart: it lends "
                    "templates to other charts and cannot be launched"
                )
            broken = [b for b in catalog.broken if b.name == name]
            if broken:
                raise ChartInvalid(
                    f"chart {name!r} in catalog {catalog_id!r} is broken: {broken[0].reason}"
                )
            if catalog.error and not catalog.charts:
                raise ChartNotFound(
                    f"catalog {catalog_id!r} could not be loaded ({catalog.error}), so chart "
                    f"{name!r} is not available"
                )
            raise ChartNotFound(
                f"no chart {name!r} in catalog {catalog_id!r}{_suggest(name, catalog.charts)}; "
                f"charts: {', '.join(catalog.chart_names()) or '(none)'}"
            )
        if version is None:
            return versions[0]
        for chart in versions:
            if chart.version == version:
                return chart
        entry = catalog.index.get((name, version))
        if entry is None:
            raise ChartNotFound(
                f"chart {name!r} in catalog {catalog_id!r} has no version {version!r}; "
                f"versions: {', '.join(catalog.versions.get(name, ()))}"
            )
        key = (catalog_id, name, version)
        cached = self._on_demand.get(key)
        if cached is None:
            with self._fetch_lock:
                cached = self._on_demand.get(key)  # another thread may have fetched it
                if cached is None:
                    with httpx.Client(timeout=HTTP_TIMEOUT_S, follow_redirects=True) as http:
                        fetched = fetch_chart_version(
                            catalog.config, entry, self.cache_dir, http, catalog.index
                        )
                    cached = replace(
                        fetched,
                        versions=versions[0].versions,
                        schemas=self.schemas,
                        icon_path=fetched.icon_path or versions[0].icon_path,
                    )
                    self._on_demand[key] = cached
        return cached

    # ---------------------------------------------------------------- refreshing

    def refresh_sync(self, catalog_id: str | None = None) -> dict[str, str | None]:
        """Reload catalogs now, in this thread. Returns ``{catalog_id: error or None}``."""
        configs = [self.catalog(catalog_id).config] if catalog_id else list(self.configs)
        results = {}
        with httpx.Client(timeout=HTTP_TIMEOUT_S, follow_redirects=True) as http:
            for config in configs:
                results[config.id] = self._refresh_one(config, http)
        return results

    async def refresh(self, catalog_id: str | None = None) -> dict[str, str | None]:
        """Reload catalogs in a worker thread; readers keep the old snapshot meanwhile.

        Concurrent refreshes of the same catalog are coalesced (the second waits for the first).
        Returns ``{catalog_id: error or None}``; errors are also kept on the snapshot.
        """
        ids = [self.catalog(catalog_id).id] if catalog_id else [c.id for c in self.configs]
        results = {}
        for one in ids:
            lock = self._refresh_locks.setdefault(one, asyncio.Lock())
            async with lock:
                results.update(await asyncio.to_thread(self.refresh_sync, one))
        return results

    def _refresh_one(self, config: CatalogConfig, http: httpx.Client) -> str | None:
        try:
            with self._fetch_lock:
                loaded = load_catalog(config, self.cache_dir, http)
        except Exception as exc:  # any failure keeps the last good snapshot being served
            message = (
                exc.message if isinstance(exc, CatalogError) else f"{type(exc).__name__}: {exc}"
            )
            log.warning("catalog %s: refresh failed, keeping last snapshot: %s", config.id, message)
            with self._swap_lock:
                old = self._catalogs[config.id]
                self._swap(config.id, replace(old, error=message))
            return message
        unreachable: set[str] = set()  # icon hosts that failed during this refresh
        charts = {
            name: tuple(
                replace(c, schemas=self.schemas, icon_path=self._icon(config, c, http, unreachable))
                for c in versions
            )
            for name, versions in loaded.charts.items()
        }
        with self._swap_lock:
            self._swap(config.id, replace(loaded, charts=MappingProxyType(charts)))
            self._on_demand = {k: v for k, v in self._on_demand.items() if k[0] != config.id}
        for broken in loaded.broken:
            log.warning("catalog %s: chart %s is broken: %s", config.id, broken.name, broken.reason)
        return None

    def _icon(
        self, config: CatalogConfig, chart: Chart, http: httpx.Client, unreachable: set[str]
    ) -> Path | None:
        """The icon file the platform serves for ``chart`` (see :mod:`datalab.catalog.icons`):
        its own, else its remote icon downloaded when the catalog has ``fetch_icons``."""
        if chart.icon_path is not None or not config.fetch_icons or not is_remote(chart.icon):
            return chart.icon_path
        return self.icons.fetch(str(chart.icon), http, unreachable)

    def _swap(self, catalog_id: str, catalog: Catalog) -> None:
        self._catalogs = MappingProxyType({**self._catalogs, catalog_id: catalog})

    # ---------------------------------------------------------------- background loop

    def start(self) -> None:
        """Start refreshing, in the running event loop, every catalog that has a
        ``refresh_interval_s`` (first refresh after one interval: call :meth:`refresh` first)."""
        if self._tasks:
            return
        for config in self.configs:
            if config.refresh_interval_s:
                task = asyncio.create_task(
                    self._refresh_forever(config.id, config.refresh_interval_s),
                    name=f"catalog-refresh-{config.id}",
                )
                self._tasks.append(task)

    async def stop(self) -> None:
        """Stop the background refreshes (an in-flight load finishes in its thread)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _refresh_forever(self, catalog_id: str, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.refresh(catalog_id)


def _suggest(name: str, known: Iterable[str]) -> str:
    matches = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {matches[0]!r}?)" if matches else ""
