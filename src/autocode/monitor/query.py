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
import math
import os
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from autocode.errors import UserError
from autocode.monitor import etl, rollups, schema
from autocode.monitor.storage import LocalStore, Store, open_store

LEVELS = ("section", "division", "group", "class", "subclass")


@dataclass(frozen=True)
class SortedFile:
    """A sorted value roll-up file and the range of bins of each of its row groups: what a
    quantile reads of it is found without asking the file (or DuckDB) again."""

    path: str
    metadata: Any  # pyarrow.parquet.FileMetaData
    low: np.ndarray
    high: np.ndarray

    @classmethod
    def open(cls, path: str) -> SortedFile:
        metadata = pq.read_metadata(path)
        column = metadata.schema.to_arrow_schema().get_field_index("bucket")
        groups = [
            metadata.row_group(i).column(column).statistics for i in range(metadata.num_row_groups)
        ]
        low = np.array([g.min if g is not None and g.has_min_max else -(2**15) for g in groups])
        high = np.array([g.max if g is not None and g.has_min_max else 2**15 for g in groups])
        return cls(path, metadata, low, high)

    def read(self, ranges: Sequence[tuple[int, int]]) -> pa.Table | None:
        """The row groups that may hold a bin of ``ranges`` (inclusive bounds)."""
        keep = np.zeros(len(self.low), dtype=bool)
        for first, last in ranges:
            keep |= (self.high >= first) & (self.low <= last)
        if not keep.any():
            return None
        return pq.ParquetFile(self.path, metadata=self.metadata).read_row_groups(
            np.flatnonzero(keep).tolist()
        )


# the sorted value files of each connection made by Dataset.connect from roll-ups
_SORTED: weakref.WeakKeyDictionary[duckdb.DuckDBPyConnection, dict[str, list[SortedFile]]] = (
    weakref.WeakKeyDictionary()
)


class MonitorError(UserError, ValueError):
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
        start_text, sep, end_text = text.partition("..")
        if not sep:
            raise MonitorError(f"window {text!r}: write START..END (e.g. 2026-11-01..2026-11-08)")
        return cls(_instant(start_text), _instant(end_text))

    def whole_hours(self) -> bool:
        return all(t.minute == t.second == t.microsecond == 0 for t in (self.start, self.end))

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
    # the small roll-ups, read once (files are immutable: a path is never rewritten)
    _tables: dict[str, pa.Table] = field(init=False, default_factory=dict)
    _sorted: dict[str, SortedFile] = field(init=False, default_factory=dict)

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

    def days(self, window: Window | None = None) -> list[str]:
        """The compacted days ``window`` touches (all of them if None)."""
        manifests = self.manifests()
        if window is None:
            return sorted(manifests)
        return [d for d in window.dates() if d in manifests]

    def files(self, window: Window | None = None) -> list[str]:
        """Local paths of the rows' Parquet files of the days ``window`` touches; S3 files are
        downloaded to the cache first, once."""
        manifests = self.manifests()
        return [
            self._local(item["key"])
            for day in self.days(window)
            for item in manifests[day]["files"]
        ]

    def rollup_files(self, name: str, window: Window | None = None) -> list[str] | None:
        """Local paths of roll-up ``name`` of the window's days (None if a day has none)."""
        manifests = self.manifests()
        keys = [manifests[day].get("rollups", {}).get(name) for day in self.days(window)]
        if any(key is None for key in keys):
            return None
        return [self._local(key) for key in keys]

    def rollup_table(self, name: str, window: Window | None = None) -> pa.Table | None:
        """Roll-up ``name`` of the window's days in memory (None if a day has none). The small
        roll-ups are kept in memory once read, so that the dashboard's queries scan memory."""
        files = self.rollup_files(name, window)
        if files is None:
            return None
        with self._lock:
            missing = [path for path in files if path not in self._tables]
        read = {path: pq.read_table(path) for path in missing}
        with self._lock:
            self._tables.update(read)
            tables = [self._tables[path] for path in files]
            if len(self._tables) > 4 * len(rollups.NAMES) * max(len(self._manifests), 1):
                keys = {k for m in self._manifests.values() for k in etl.written_by(m)}
                listed = {self._path(key) for key in keys}
                for path in [p for p in self._tables if p not in listed]:
                    del self._tables[path]
        if not tables:
            return None
        return pa.concat_tables(tables, promote_options="permissive")

    def sorted_files(self, files: list[str]) -> list[SortedFile]:
        with self._lock:
            missing = [path for path in files if path not in self._sorted]
        opened = {path: SortedFile.open(path) for path in missing}
        with self._lock:
            self._sorted.update(opened)
            if len(self._sorted) > 4 * max(len(self._manifests), 1):
                for path in [p for p in self._sorted if p not in set(files)]:
                    del self._sorted[path]
            return [self._sorted[path] for path in files]

    def _path(self, key: str) -> str:
        """Where the file ``key`` is (or will be, once downloaded) on this machine."""
        if isinstance(self.store, LocalStore):
            return str(self.store.root / key)
        assert self.cache_dir is not None
        return str(self.cache_dir / key)

    def _local(self, key: str) -> str:
        path = self._path(key)
        if not isinstance(self.store, LocalStore) and not Path(path).exists():
            self.store.download(key, Path(path))
        return path

    def prune_cache(self) -> int:
        """Delete cached files no manifest lists any more; returns how many."""
        if self.cache_dir is None or not self.cache_dir.is_dir():
            return 0
        listed = {key for m in self.manifests().values() for key in etl.written_by(m)}
        removed = 0
        for path in self.cache_dir.rglob("*.parquet"):
            if path.relative_to(self.cache_dir).as_posix() not in listed:
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def connect(
        self,
        window: Window | None = None,
        threads: int | None = None,
        *,
        rows: bool = True,
        use_rollups: bool = True,
    ) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection over the window's days: the relations every metric reads
        (``hourly``, ``codes``, ``ic``, ``latency`` and the sorted ``ic_values`` and
        ``latency_values``; see `autocode.monitor.rollups`) and, with
        ``rows``, the ``predictions`` themselves.

        The relations come from the days' hourly roll-ups when the window starts and ends on
        whole hours, else (or without ``use_rollups``) from the rows with their exact times."""
        con = duckdb.connect()
        if threads:
            con.execute(f"SET threads = {int(threads)}")
        hourly = window is None or window.whole_hours()
        sources = {}
        if use_rollups and hourly:
            for name in rollups.NAMES:
                files = self.rollup_files(name, window)
                if files is None:
                    break
                sources[name] = files
        if rows or len(sources) < len(rollups.NAMES):
            files = self.files(window)
            if files:
                listing = ", ".join(_sql_string(p) for p in files)
                source = (
                    f"read_parquet([{listing}], hive_partitioning = true, union_by_name = true)"
                )
            else:  # no data yet: the same columns, no rows
                con.register("empty_predictions", pa.Table.from_pylist([], schema=schema.SCHEMA))
                source = "(SELECT *, NULL::VARCHAR AS date FROM empty_predictions)"
            con.execute(f"CREATE VIEW predictions AS SELECT * FROM {source}")
        from_rollups = len(sources) == len(rollups.NAMES)
        con.execute(f"SET VARIABLE autocode_rollups = {from_rollups}")
        con.execute("SET parquet_metadata_cache = true")  # files are immutable (etl)
        empty = {}
        if from_rollups and not all(sources.values()):  # whole hours, no day: empty relations
            empty = rollups.compute(pa.Table.from_pylist([], schema=schema.SCHEMA))
        for name in rollups.NAMES:
            table = (
                self.rollup_table(name, window)
                if from_rollups and sources[name] and name not in rollups.SORTED
                else None
            )
            if table is not None:  # in memory: scanned in no time
                con.register(name, table)
            elif from_rollups and sources[name]:  # large, sorted: read a few row groups
                listing = ", ".join(_sql_string(p) for p in sources[name])
                con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet([{listing}])")
                _SORTED.setdefault(con, {})[name] = self.sorted_files(sources[name])
            elif from_rollups:
                con.register(f"empty_{name}", empty[name])
                con.execute(f"CREATE VIEW {name} AS SELECT * FROM empty_{name}")
            else:
                sql = rollups.relation_sql(name, "predictions", rollups.ROW_TIME)
                con.execute(f"CREATE VIEW {name} AS {sql}")
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


# the share coded automatically, as the rows' avg(auto::INTEGER) (a NULL decision not counted)
AUTO_RATE = (
    "coalesce(sum(predictions) FILTER (WHERE auto), 0)"
    " / sum(predictions) FILTER (WHERE auto IS NOT NULL)"
)
BINS = {"ic": "ic_bin", "latency": "bucket"}


def _frame(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any]) -> pd.DataFrame:
    return con.execute(sql, list(params)).df()


def quantiles(
    con: duckdb.DuckDBPyConnection,
    variable: str,
    filters: Filters,
    probabilities: Sequence[float],
    by: Sequence[str] = (),
    also: tuple[str, Sequence[Any]] | None = None,
) -> pd.DataFrame:
    """Exact quantiles of ``variable`` (``ic`` or ``latency``) per group of the SQL expressions
    ``by`` (over ``ts``, ``model_name``, ``model_version``): DuckDB's ``quantile_cont`` (linear
    interpolation between the order statistics around ``(n - 1) · p``), without sorting the rows.

    The bins' counts (relation ``ic`` or ``latency``) give the bin holding each order statistic
    needed and its rank there; then only those bins' values are read from the sorted relation
    ``<variable>_values`` and ranked. One column per probability (``p50``, ``p99``, ``p100``: the
    maximum), one row per group that has values; the groups as columns ``g0``, ``g1``, ...
    ``also``: one more condition and its parameters."""
    where, params = filters.where()
    if also is not None:
        where, params = f"{where} AND {also[0]}", [*params, *also[1]]
    keys = [f"{expression} AS g{i}" for i, expression in enumerate(by)]
    names = [f"g{i}" for i in range(len(by))]
    columns = [_quantile_name(p) for p in probabilities]
    counts = _frame(
        con,
        f"""SELECT {", ".join([*keys, f"{BINS[variable]} AS bucket"])},
                   sum(predictions)::BIGINT AS n
            FROM {variable} WHERE {where} GROUP BY ALL ORDER BY ALL""",
        params,
    )
    if counts.empty:
        return pd.DataFrame(columns=names + columns)
    group = (
        counts.groupby(names, sort=False, dropna=False).ngroup().to_numpy()
        if names
        else np.zeros(len(counts), dtype=int)
    )
    n = counts["n"].to_numpy()
    cumulative = np.cumsum(n)
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    totals = np.add.reduceat(n, starts)
    base = cumulative[starts] - n[starts]  # values before each group
    wanted = []  # (group, probability index, rank in the group)
    positions = np.outer(totals - 1, np.asarray(probabilities, dtype=float))  # (n - 1) · p
    lows, highs = np.floor(positions).astype(np.int64), np.ceil(positions).astype(np.int64)
    for ranks in (lows, highs):
        wanted.append(ranks + base[:, None])
    everything = np.concatenate([w.ravel() for w in wanted])
    rows = np.searchsorted(cumulative, everything, side="right")
    local = everything - (cumulative[rows] - n[rows])
    needed = counts.iloc[rows][[*names, "bucket"]].reset_index(drop=True)
    needed["r"] = local
    buckets = sorted(set(needed["bucket"].tolist()))
    runs = _runs(buckets)
    source = f"{variable}_values"
    files = _SORTED.get(con, {}).get(source)
    if files is not None:  # only the row groups of those bins, straight from the files
        tables = [t for t in (f.read(runs) for f in files) if t is not None]
        if tables:
            con.register("_quantile_values", pa.concat_tables(tables))
            source = "_quantile_values"
    try:
        found = _frame(
            con,
            f"""SELECT {", ".join([*keys, "bucket", "value"])} FROM {source}
                WHERE {where} AND ({_ranges("bucket", runs)})""",
            params,
        )
    finally:
        if source == "_quantile_values":
            con.unregister("_quantile_values")
    # rank the values within their group and bin; keep the ranks wanted
    found = found.sort_values([*names, "bucket", "value"], kind="stable")
    found["r"] = found.groupby([*names, "bucket"], dropna=False, sort=False).cumcount()
    kind = found["value"].dtype
    picked = needed.merge(found, on=[*names, "bucket", "r"], how="left", validate="many_to_one")
    values = picked["value"].to_numpy(dtype=float)
    low, high = values[: lows.size].reshape(lows.shape), values[lows.size :].reshape(lows.shape)
    result = _interpolate(low, high, positions - lows, highs == lows)
    # DuckDB interpolates in double, then casts to the value's type (FLOAT for the latency)
    result = result.astype(kind).astype(float)
    out = counts.iloc[starts][names].reset_index(drop=True)
    for index, column in enumerate(columns):
        out[column] = result[:, index]
    return out


def _interpolate(
    low: np.ndarray, high: np.ndarray, fraction: np.ndarray, same: np.ndarray
) -> np.ndarray:
    """``low · (1 − d) + high · d`` rounded as DuckDB's ``quantile_cont`` rounds it (the first
    product fused with the sum: one rounding), so that the result is the same double."""
    out = low.copy()
    for index in zip(*np.nonzero(~same), strict=True):
        lo, hi, d = float(low[index]), float(high[index]), float(fraction[index])
        out[index] = float(Fraction(lo) * Fraction(1.0 - d) + Fraction(hi * d))
    return out


def _quantile_name(p: float) -> str:
    return f"p{round(p * 100)}" if round(p * 100) == p * 100 else f"p{p * 100:g}"


def _runs(values: Sequence[int]) -> list[tuple[int, int]]:
    """Sorted integers as ranges of consecutive ones (inclusive bounds)."""
    if not values:
        return []
    runs, first, last = [], values[0], values[0]
    for value in values[1:]:
        if value == last + 1:
            last = value
            continue
        runs.append((first, last))
        first = last = value
    runs.append((first, last))
    return runs


def _ranges(column: str, runs: Sequence[tuple[int, int]]) -> str:
    if not runs:
        return "false"
    return " OR ".join(f"{column} BETWEEN {int(a)} AND {int(b)}" for a, b in runs)


def _merge(frame: pd.DataFrame, found: pd.DataFrame, on: list[str]) -> pd.DataFrame:
    """``frame`` with the columns of ``found`` (quantiles) joined on ``on`` (None where none)."""
    if found.empty:
        return frame.assign(**{c: None for c in found.columns if c not in on})
    return frame.merge(found, on=on, how="left")


def _one(frame: pd.DataFrame, column: str) -> float | None:
    return None if frame.empty or pd.isna(frame[column].iloc[0]) else float(frame[column].iloc[0])


def summary(con: duckdb.DuckDBPyConnection, filters: Filters) -> dict[str, Any]:
    """Totals of the window: predictions, requests, automatic-coding rate, IC mean and median,
    latency p50 and p99, first and last time, number of model versions."""
    where, params = filters.where()
    row = con.execute(
        f"""SELECT coalesce(sum(predictions), 0)::BIGINT, coalesce(sum(requests), 0)::BIGINT,
                   {AUTO_RATE}, sum(ic_sum) / sum(ic_count), min(first_ts), max(last_ts),
                   count(DISTINCT model_version)
            FROM hourly WHERE {where}""",
        params,
    ).fetchone()
    assert row is not None
    predictions, requests, auto_rate, ic_mean, first, last, versions = row
    ic = quantiles(con, "ic", filters, (0.5,))
    latencies = quantiles(con, "latency", filters, (0.5, 0.99))
    return {
        "predictions": predictions,
        "requests": requests,
        "auto_rate": auto_rate,
        "ic_mean": ic_mean,
        "ic_median": _one(ic, "p50"),
        "latency_p50_ms": _one(latencies, "p50"),
        "latency_p99_ms": _one(latencies, "p99"),
        "first": first,
        "last": last,
        "model_versions": versions,
    }


def volume(con: duckdb.DuckDBPyConnection, filters: Filters, by: str = "hour") -> pd.DataFrame:
    """Predictions, requests (batch index 0) and automatic-coding rate per hour or day."""
    if by not in ("hour", "day"):
        raise MonitorError(f"by={by!r}: hour or day")
    where, params = filters.where()
    return _frame(
        con,
        f"""SELECT date_trunc('{by}', ts) AS period,
                   sum(predictions)::BIGINT AS predictions, sum(requests)::BIGINT AS requests,
                   coalesce(sum(predictions) FILTER (WHERE auto), 0)::BIGINT AS automatic,
                   {AUTO_RATE} AS auto_rate
            FROM hourly WHERE {where} GROUP BY 1 ORDER BY 1""",
        params,
    )


DEFAULT_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(21))


def automation_by_threshold(
    con: duckdb.DuckDBPyConnection,
    filters: Filters,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
) -> pd.DataFrame:
    """Share of predictions that would be coded automatically at each threshold (IC >= t).

    From the IC bins: IC >= t is ``ic_bin >= 1000 · t`` when t has 3 decimals; for another t,
    the bins above t's plus the values of t's own bin that reach it."""
    where, params = filters.where()
    row = con.execute(
        f"SELECT coalesce(sum(predictions), 0)::BIGINT FROM hourly WHERE {where}", params
    ).fetchone()
    total = int(row[0]) if row else 0
    counts = _ic_bins(con, filters)
    bins, numbers = counts["ic_bin"].to_numpy(), counts["predictions"].to_numpy()
    grid = [float(t) for t in thresholds]
    automatic = []
    for t in grid:
        j = math.floor(t * rollups.IC_SCALE)
        if t >= (j + 1) / rollups.IC_SCALE:  # the product rounded down across an integer
            j += 1
        elif t < j / rollups.IC_SCALE:
            j -= 1
        if t == j / rollups.IC_SCALE:  # on the grid: whole bins
            automatic.append(int(numbers[bins >= j].sum()))
            continue
        edge = con.execute(
            f"SELECT count(*) FROM ic_values WHERE {where} AND bucket = {j} AND value >= ?",
            [*params, t],
        ).fetchone()
        automatic.append(int(numbers[bins > j].sum()) + int(edge[0] if edge else 0))
    frame = pd.DataFrame({"threshold": grid, "automatic": automatic, "predictions": total})
    frame["auto_rate"] = frame["automatic"] / total if total else float("nan")
    return frame


def thresholds_in_use(con: duckdb.DuckDBPyConnection, filters: Filters) -> pd.DataFrame:
    where, params = filters.where()
    return _frame(
        con,
        f"""SELECT model_version, threshold, sum(predictions)::BIGINT AS predictions,
                   {AUTO_RATE} AS auto_rate
            FROM hourly WHERE {where} GROUP BY 1, 2 ORDER BY predictions DESC, 1, 2""",
        params,
    )


def _ic_bins(con: duckdb.DuckDBPyConnection, filters: Filters) -> pd.DataFrame:
    """Predictions per IC bin of width 0.001 (``ic_bin``), sorted."""
    where, params = filters.where()
    return _frame(
        con,
        f"""SELECT ic_bin, sum(predictions)::BIGINT AS predictions FROM ic WHERE {where}
            GROUP BY 1 ORDER BY 1""",
        params,
    )


def ic_histogram(con: duckdb.DuckDBPyConnection, filters: Filters, bins: int = 20) -> pd.DataFrame:
    """Counts of the IC in ``bins`` equal bins [i / bins, (i + 1) / bins) of [0, 1] (1.0 falls in
    the last); ``bins`` must divide 1000."""
    if bins < 1 or rollups.IC_SCALE % bins:
        raise MonitorError(f"bins={bins}: choose a divisor of {rollups.IC_SCALE}")
    counts = _ic_bins(con, filters)
    width = rollups.IC_SCALE // bins
    index = np.clip(counts["ic_bin"].to_numpy() // width, 0, bins - 1)
    numbers = np.bincount(index, weights=counts["predictions"].to_numpy(), minlength=bins)
    full = pd.DataFrame({"bin": range(bins), "predictions": numbers.astype(int)})
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
    """Quantiles of the IC (exact, as ``quantile_cont``)."""
    found = quantiles(con, "ic", filters, probabilities)
    return {_quantile_name(p): _one(found, _quantile_name(p)) for p in probabilities}


def ic_by_model(con: duckdb.DuckDBPyConnection, filters: Filters) -> pd.DataFrame:
    where, params = filters.where()
    frame = _frame(
        con,
        f"""SELECT model_version, sum(predictions)::BIGINT AS predictions,
                   sum(ic_sum) / sum(ic_count) AS ic_mean
            FROM hourly WHERE {where} GROUP BY 1 ORDER BY 1""",
        params,
    )
    medians = quantiles(con, "ic", filters, (0.5,), ("model_version",))
    medians = medians.rename(columns={"g0": "model_version", "p50": "ic_median"})
    return _merge(frame, medians, ["model_version"])


def latency(con: duckdb.DuckDBPyConnection, filters: Filters, by: str = "hour") -> pd.DataFrame:
    """Latency percentiles (ms) per hour or day: p50, p90, p99 and maximum."""
    if by not in ("hour", "day"):
        raise MonitorError(f"by={by!r}: hour or day")
    where, params = filters.where()
    frame = _frame(
        con,
        f"""SELECT date_trunc('{by}', ts) AS period, sum(predictions)::BIGINT AS predictions
            FROM hourly WHERE {where} GROUP BY 1 ORDER BY 1""",
        params,
    )
    columns = {"g0": "period", "p50": "p50_ms", "p90": "p90_ms", "p99": "p99_ms", "p100": "max_ms"}
    probabilities = (0.5, 0.9, 0.99, 1.0)
    if by == "day" or not from_rollups(con):
        found = quantiles(con, "latency", filters, probabilities, (f"date_trunc('{by}', ts)",))
        return _merge(frame, found.rename(columns=columns), ["period"])
    # the percentiles the compaction computed for each hour: of all its models together when
    # the filters keep them all, of the one model they keep; the rare other hours ranked
    window_where, window_params = Filters(filters.window).where()
    hours = _frame(
        con,
        f"""WITH kept_rows AS (SELECT * FROM latency_hours WHERE {where} AND NOT every_model),
                 kept AS (SELECT ts, count(*) AS kept FROM kept_rows GROUP BY 1),
                 models AS (SELECT ts, count(*) AS every FROM latency_hours
                            WHERE {window_where} AND NOT every_model GROUP BY 1),
                 counted AS (SELECT * FROM kept JOIN models USING (ts))
            SELECT ts AS period, 'all' AS kind, p50_ms, p90_ms, p99_ms, max_ms
            FROM latency_hours JOIN counted USING (ts) WHERE every_model AND kept = every
            UNION ALL
            SELECT ts, 'one', p50_ms, p90_ms, p99_ms, max_ms
            FROM kept_rows JOIN counted USING (ts) WHERE kept = 1 AND every > 1
            UNION ALL
            SELECT ts, 'mixed', NULL, NULL, NULL, NULL FROM counted
            WHERE 1 < kept AND kept < every""",
        [*params, *window_params],
    )
    found = hours.loc[hours["kind"] != "mixed"].drop(columns="kind")
    mixed = hours.loc[hours["kind"] == "mixed", "period"].tolist()
    if mixed:
        ranked = quantiles(
            con,
            "latency",
            filters,
            probabilities,
            ("ts",),
            (f"ts IN ({', '.join('?' * len(mixed))})", [p.to_pydatetime() for p in mixed]),
        )
        found = pd.concat([found, ranked.rename(columns=columns)], ignore_index=True)
    return _merge(frame, found, ["period"])


def from_rollups(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the relations of ``con`` are the compaction's hourly roll-ups (else the rows')."""
    row = con.execute("SELECT getvariable('autocode_rollups')").fetchall()
    return bool(row[0][0])


def by_model(con: duckdb.DuckDBPyConnection, filters: Filters) -> pd.DataFrame:
    """Per model name and version: volume, automation, IC, latency, first and last seen."""
    where, params = filters.where()
    frame = _frame(
        con,
        f"""SELECT model_name, model_version, sum(predictions)::BIGINT AS predictions,
                   {AUTO_RATE} AS auto_rate,
                   sum(ic_sum) / sum(ic_count) AS ic_mean,
                   min(first_ts) AS first_seen, max(last_ts) AS last_seen
            FROM hourly WHERE {where} GROUP BY 1, 2 ORDER BY first_seen, 1, 2""",
        params,
    )
    found = quantiles(con, "latency", filters, (0.5, 0.99), ("model_name", "model_version"))
    found = found.rename(
        columns={
            "g0": "model_name",
            "g1": "model_version",
            "p50": "latency_p50_ms",
            "p99": "latency_p99_ms",
        }
    )
    frame = _merge(frame, found, ["model_name", "model_version"])
    columns = ["model_name", "model_version", "predictions", "auto_rate", "ic_mean"]
    return frame[[*columns, "latency_p50_ms", "latency_p99_ms", "first_seen", "last_seen"]]


def uncertain(con: duckdb.DuckDBPyConnection, filters: Filters, limit: int = 50) -> pd.DataFrame:
    """The latest predictions not coded automatically (the ones a person codes). Read from the
    rows: the last day of the window first (row groups are sorted by time), all of it if that
    day has fewer."""
    where, params = filters.where()
    columns = f"""SELECT ts, text, codes[1] AS code, probabilities[1] AS probability,
                         codes[2] AS second_code, probabilities[2] AS second_probability,
                         ic, threshold, model_version, client, id
                  FROM predictions WHERE {where} AND NOT auto"""
    last = con.execute(f"SELECT max(ts) FROM hourly WHERE {where}", params).fetchone()
    if last and last[0] is not None:
        since = last[0] - timedelta(days=1)
        recent = _frame(
            con, f"{columns} AND ts >= ? ORDER BY ts DESC, id LIMIT {int(limit)}", [*params, since]
        )
        if len(recent) >= limit:
            return recent
    return _frame(con, f"{columns} ORDER BY ts DESC, id LIMIT {int(limit)}", params)


def code_counts(con: duckdb.DuckDBPyConnection, filters: Filters) -> pd.DataFrame:
    """Predictions per top-1 code (the finest level): how many, how many coded automatically
    (of how many decided), the IC's sum and count (what a coarser level adds up), rate and mean."""
    where, params = filters.where()
    return _frame(
        con,
        f"""SELECT code, sum(predictions)::BIGINT AS predictions,
                   coalesce(sum(predictions) FILTER (WHERE auto), 0)::BIGINT AS automatic,
                   coalesce(sum(predictions) FILTER (WHERE auto IS NOT NULL), 0)::BIGINT
                       AS decided,
                   {AUTO_RATE} AS auto_rate,
                   sum(ic_sum) AS ic_sum, sum(ic_count)::BIGINT AS ic_count,
                   sum(ic_sum) / sum(ic_count) AS ic_mean
            FROM codes WHERE {where} GROUP BY 1""",
        params,
    )
