"""Metrics of the prediction log: DuckDB over the compacted Parquet.

`Dataset` finds the files of a time window through the days' manifests (never by listing
Parquet files: a killed compaction's leftovers are not data). Files in S3 are first copied to a
local cache (they are immutable: a file name is never reused, so a cached copy is always right),
then DuckDB reads local Parquet: dashboards query the same window again and again, and no DuckDB
extension is needed (``httpfs`` on PyPI stops at DuckDB 1.4, this environment has 2.x).

Each metric is a function of a DuckDB connection and a `Window` returning a pandas DataFrame; the
CLI, the dashboard and the HTML report call the same functions.
"""

# ruff: noqa: S608 -- the SQL built here interpolates only validated numbers, level names and the
# placeholders of Filters.where; every value a user gives is a bound parameter.
from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa

from autocode.monitor import etl, schema
from autocode.monitor.storage import LocalStore, Store, open_store

LEVELS = ("section", "division", "group", "class", "subclass")


class MonitorError(ValueError):
    """A query the user can fix (bad window, unknown level); the message says what to change."""


@dataclass(frozen=True)
class Window:
    """A half-open time window [start, end) in UTC."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise MonitorError("window bounds need a time zone")
        if self.end <= self.start:
            raise MonitorError(
                f"empty window: {self.start:%Y-%m-%d %H:%M} is not before {self.end:%Y-%m-%d %H:%M}"
            )

    @classmethod
    def parse(cls, text: str) -> Window:
        """``2026-11-01..2026-11-08`` (days, end exclusive), ``2026-11-01T06:00..2026-11-01T12:00``,
        or ``last:7d`` / ``last:24h`` (ending now)."""
        text = text.strip()
        if text.startswith("last:"):
            amount = text[5:]
            unit = amount[-1:]
            try:
                value = float(amount[:-1])
            except ValueError:
                value = -1
            if unit not in ("d", "h") or value <= 0:
                raise MonitorError(f"window {text!r}: write last:7d or last:24h")
            end = datetime.now(UTC)
            return cls(end - timedelta(**{"days" if unit == "d" else "hours": value}), end)
        start, sep, end = text.partition("..")
        if not sep:
            raise MonitorError(f"window {text!r}: write START..END (e.g. 2026-11-01..2026-11-08)")
        return cls(_instant(start), _instant(end))

    def dates(self) -> list[str]:
        day, last = self.start.date(), (self.end - timedelta(microseconds=1)).date()
        out = []
        while day <= last:
            out.append(day.isoformat())
            day += timedelta(days=1)
        return out

    def label(self) -> str:
        whole = self.start.second == self.end.second == 0
        form = "%Y-%m-%d %H:%M" if whole else "%Y-%m-%d %H:%M:%S"
        return f"{self.start:{form}} – {self.end:{form}} UTC"


def _instant(text: str) -> datetime:
    text = text.strip()
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise MonitorError(
            f"{text!r} is not a date or ISO time (2026-11-01, 2026-11-01T06:00)"
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def day_window(first: date, last: date) -> Window:
    """Whole days ``first`` to ``last`` included."""
    start = datetime(first.year, first.month, first.day, tzinfo=UTC)
    end = datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=1)
    return Window(start, end)


@dataclass
class Dataset:
    """The compacted predictions at ``location`` (folder or ``s3://``), queried with DuckDB."""

    location: str
    cache_dir: Path | None = None
    refresh_s: float = 30.0
    store: Store = field(init=False)
    _manifests: dict[str, dict[str, Any]] = field(init=False, default_factory=dict)
    _listed_at: float = field(init=False, default=float("-inf"))
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.store = open_store(self.location)
        if self.cache_dir is None and not isinstance(self.store, LocalStore):
            digest = hashlib.sha256(self.store.uri.encode()).hexdigest()[:16]
            base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
            self.cache_dir = base / "autocode" / "monitor" / digest

    def manifests(self, refresh: bool = False) -> dict[str, dict[str, Any]]:
        with self._lock:
            if refresh or time.monotonic() - self._listed_at >= self.refresh_s:
                self._manifests = etl.manifests(self.store)
                self._listed_at = time.monotonic()
            return self._manifests

    def dates(self) -> list[str]:
        return sorted(self.manifests())

    def files(self, window: Window | None = None) -> list[str]:
        """Local paths of the Parquet files of the days ``window`` touches (all days if None);
        S3 files are downloaded to the cache first, once."""
        manifests = self.manifests()
        days = (
            sorted(manifests) if window is None else [d for d in window.dates() if d in manifests]
        )
        paths = []
        for day in days:
            for item in manifests[day]["files"]:
                paths.append(self._local(item["key"]))
        return paths

    def _local(self, key: str) -> str:
        if isinstance(self.store, LocalStore):
            return str(self.store.root / key)
        assert self.cache_dir is not None
        path = self.cache_dir / key
        if not path.exists():
            self.store.download(key, path)
        return str(path)

    def prune_cache(self) -> int:
        """Delete cached files no manifest lists any more; returns how many."""
        if self.cache_dir is None or not self.cache_dir.is_dir():
            return 0
        listed = {f["key"] for m in self.manifests().values() for f in m["files"]}
        removed = 0
        for path in self.cache_dir.rglob("*.parquet"):
            if path.relative_to(self.cache_dir).as_posix() not in listed:
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def connect(
        self, window: Window | None = None, threads: int | None = None
    ) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection with a ``predictions`` view over the window's days."""
        con = duckdb.connect()
        if threads:
            con.execute(f"SET threads = {int(threads)}")
        files = self.files(window)
        if files:
            listing = ", ".join(_sql_string(p) for p in files)
            source = f"read_parquet([{listing}], hive_partitioning = true, union_by_name = true)"
        else:  # no data yet: the same columns, no rows
            con.register("empty_predictions", pa.Table.from_pylist([], schema=schema.SCHEMA))
            source = "(SELECT *, NULL::VARCHAR AS date FROM empty_predictions)"
        con.execute(f"CREATE VIEW predictions AS SELECT * FROM {source}")
        return con


def _naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# -- filters ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Filters:
    """What every metric is restricted to: a window, optionally model versions and clients."""

    window: Window
    model_versions: tuple[str, ...] = ()

    def where(self) -> tuple[str, list[Any]]:
        clauses = ["ts >= ?", "ts < ?"]
        params: list[Any] = [_naive(self.window.start), _naive(self.window.end)]
        if self.model_versions:
            clauses.append(f"model_version IN ({', '.join('?' * len(self.model_versions))})")
            params.extend(self.model_versions)
        return " AND ".join(clauses), params


def _frame(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any]) -> pd.DataFrame:
    return con.execute(sql, list(params)).df()


def summary(con: duckdb.DuckDBPyConnection, filters: Filters) -> dict[str, Any]:
    where, params = filters.where()
    row = con.execute(
        f"""SELECT count(*) AS predictions,
                   count(*) FILTER (WHERE coalesce(batch_index, 0) = 0) AS requests,
                   avg(auto::INTEGER) AS auto_rate,
                   avg(ic) AS ic_mean,
                   median(ic) AS ic_median,
                   quantile_cont(latency_ms, 0.5) AS latency_p50_ms,
                   quantile_cont(latency_ms, 0.99) AS latency_p99_ms,
                   min(ts) AS first, max(ts) AS last,
                   count(DISTINCT model_version) AS model_versions
            FROM predictions WHERE {where}""",
        params,
    ).fetchone()
    names = [
        "predictions",
        "requests",
        "auto_rate",
        "ic_mean",
        "ic_median",
        "latency_p50_ms",
        "latency_p99_ms",
        "first",
        "last",
        "model_versions",
    ]
    return dict(zip(names, row, strict=True))


def volume(con: duckdb.DuckDBPyConnection, filters: Filters, by: str = "hour") -> pd.DataFrame:
    """Predictions, requests and automatic codings per hour or day."""
    if by not in ("hour", "day"):
        raise MonitorError(f"by={by!r}: hour or day")
    where, params = filters.where()
    return _frame(
        con,
        f"""SELECT date_trunc('{by}', ts) AS period,
                   count(*) AS predictions,
                   count(*) FILTER (WHERE coalesce(batch_index, 0) = 0) AS requests,
                   count(*) FILTER (WHERE auto) AS automatic,
                   avg(auto::INTEGER) AS auto_rate
            FROM predictions WHERE {where} GROUP BY 1 ORDER BY 1""",
        params,
    )


DEFAULT_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(21))


def automation_by_threshold(
    con: duckdb.DuckDBPyConnection,
    filters: Filters,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
) -> pd.DataFrame:
    """Share of predictions that would be coded automatically at each threshold (IC >= t)."""
    where, params = filters.where()
    grid = [float(t) for t in thresholds]
    counts = ", ".join(f"count(*) FILTER (WHERE ic >= {t!r})" for t in grid)
    row = con.execute(  # one scan for the whole grid
        f"SELECT count(*), {counts} FROM predictions WHERE {where}", params
    ).fetchone()
    assert row is not None
    total = int(row[0])
    frame = pd.DataFrame(
        {"threshold": grid, "automatic": [int(v) for v in row[1:]], "predictions": total}
    )
    frame["auto_rate"] = frame["automatic"] / total if total else float("nan")
    return frame


def thresholds_in_use(con: duckdb.DuckDBPyConnection, filters: Filters) -> pd.DataFrame:
    where, params = filters.where()
    return _frame(
        con,
        f"""SELECT model_version, threshold, count(*) AS predictions,
                   avg(auto::INTEGER) AS auto_rate
            FROM predictions WHERE {where} GROUP BY 1, 2 ORDER BY predictions DESC""",
        params,
    )


def ic_histogram(con: duckdb.DuckDBPyConnection, filters: Filters, bins: int = 20) -> pd.DataFrame:
    """Counts of the IC in ``bins`` equal bins of [0, 1] (1.0 falls in the last)."""
    where, params = filters.where()
    frame = _frame(
        con,
        f"""SELECT least(floor(ic * {bins})::INTEGER, {bins - 1}) AS bin, count(*) AS predictions
            FROM predictions WHERE {where} AND ic IS NOT NULL GROUP BY 1 ORDER BY 1""",
        params,
    )
    full = pd.DataFrame({"bin": range(bins)}).merge(frame, on="bin", how="left").fillna(0)
    full["predictions"] = full["predictions"].astype(int)
    full["low"] = full["bin"] / bins
    full["high"] = (full["bin"] + 1) / bins
    total = full["predictions"].sum()
    full["share"] = full["predictions"] / total if total else 0.0
    return full


def ic_quantiles(
    con: duckdb.DuckDBPyConnection,
    filters: Filters,
    probabilities: Sequence[float] = (0.1, 0.25, 0.5, 0.75, 0.9),
) -> dict[str, float | None]:
    where, params = filters.where()
    listing = ", ".join(repr(float(p)) for p in probabilities)
    row = con.execute(
        f"SELECT quantile_cont(ic, [{listing}]) FROM predictions WHERE {where}", params
    ).fetchone()
    values = row[0] if row and row[0] is not None else [None] * len(probabilities)
    return {f"p{round(p * 100)}": v for p, v in zip(probabilities, values, strict=True)}


def ic_by_model(con: duckdb.DuckDBPyConnection, filters: Filters) -> pd.DataFrame:
    where, params = filters.where()
    return _frame(
        con,
        f"""SELECT model_version, count(*) AS predictions, avg(ic) AS ic_mean,
                   quantile_cont(ic, 0.5) AS ic_median
            FROM predictions WHERE {where} GROUP BY 1 ORDER BY 1""",
        params,
    )


def latency(con: duckdb.DuckDBPyConnection, filters: Filters, by: str = "hour") -> pd.DataFrame:
    """Latency percentiles (ms) per hour or day."""
    if by not in ("hour", "day"):
        raise MonitorError(f"by={by!r}: hour or day")
    where, params = filters.where()
    return _frame(
        con,
        f"""SELECT date_trunc('{by}', ts) AS period, count(*) AS predictions,
                   quantile_cont(latency_ms, 0.5) AS p50_ms,
                   quantile_cont(latency_ms, 0.9) AS p90_ms,
                   quantile_cont(latency_ms, 0.99) AS p99_ms,
                   max(latency_ms) AS max_ms
            FROM predictions WHERE {where} GROUP BY 1 ORDER BY 1""",
        params,
    )


def by_model(con: duckdb.DuckDBPyConnection, filters: Filters) -> pd.DataFrame:
    """Per model name and version: volume, automation, IC, latency, first and last seen."""
    where, params = filters.where()
    return _frame(
        con,
        f"""SELECT model_name, model_version, count(*) AS predictions,
                   avg(auto::INTEGER) AS auto_rate, avg(ic) AS ic_mean,
                   quantile_cont(latency_ms, 0.5) AS latency_p50_ms,
                   quantile_cont(latency_ms, 0.99) AS latency_p99_ms,
                   min(ts) AS first_seen, max(ts) AS last_seen
            FROM predictions WHERE {where} GROUP BY 1, 2 ORDER BY first_seen""",
        params,
    )


def uncertain(con: duckdb.DuckDBPyConnection, filters: Filters, limit: int = 50) -> pd.DataFrame:
    """The latest predictions not coded automatically (the ones a person codes)."""
    where, params = filters.where()
    return _frame(
        con,
        f"""SELECT ts, text, codes[1] AS code, probabilities[1] AS probability,
                   codes[2] AS second_code, probabilities[2] AS second_probability,
                   ic, threshold, model_version, client, id
            FROM predictions WHERE {where} AND NOT auto
            ORDER BY ts DESC, id LIMIT {int(limit)}""",
        params,
    )


def code_counts(con: duckdb.DuckDBPyConnection, filters: Filters) -> pd.DataFrame:
    """Predictions per top-1 code (the finest level)."""
    where, params = filters.where()
    return _frame(
        con,
        f"""SELECT code, count(*) AS predictions, avg(auto::INTEGER) AS auto_rate,
                   avg(ic) AS ic_mean
            FROM predictions WHERE {where} GROUP BY 1""",
        params,
    )
