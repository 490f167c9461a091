# ruff: noqa: S608 -- SQL built from constants of the test
"""The hourly roll-ups give the same numbers as the rows: every metric computed from the
roll-ups (a window on whole hours) equals the same metric computed from the rows
(``use_rollups=False``) and the plain SQL over the rows it replaced (counts, rates, means,
``quantile_cont``, ``count(*) FILTER (WHERE ic >= t)``), including IC values on the bins'
edges, ties, hours served by two model versions, and days compacted before the roll-ups."""

from __future__ import annotations

import json
import math
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from autocode.monitor import drift, etl, query, rollups
from autocode.monitor.levels import code_counts
from autocode.monitor.storage import LocalStore

from .conftest import lines, random_records, segment_key

CODES = ["10.71C", "10.71D", "10.13A", "56.10A", "56.10C", "56.30Z", "47.11B", "43.99C"]
# IC values on (and just beside) the 0.001 grid, where a binned count could be off by one
EDGES = [0.0, 0.001, 0.15, 0.3, 0.35, 0.5, 0.7, 0.999, 1.0, 0.149999, 0.300001, 0.1234]
THRESHOLDS = [0.0, 0.001, 0.1, 0.15, 0.3, 0.35, 0.7, 0.999, 1.0, 0.1234, 0.3 + 1e-12, 0.0005]
WINDOWS = [
    "2026-11-02..2026-11-05",  # whole days
    "2026-11-02T05:00..2026-11-03T17:00",  # whole hours
    "2026-11-02T05:17..2026-11-03T17:42:30",  # neither: computed from the rows
]


@pytest.fixture(scope="module")
def compacted(tmp_path_factory, day0) -> Path:
    """Three days; version 3 then 4 with hours served by both; a second model name; IC values
    on the bins' edges and repeated; latencies with ties; batches."""
    rng = np.random.default_rng(11)
    records = random_records(900, day0, timedelta(days=2), rng, CODES, version="3")
    records += random_records(
        900, day0 + timedelta(days=1), timedelta(days=2), rng, CODES, version="4"
    )
    for index, item in enumerate(records):
        if index % 5 == 0:
            ic = EDGES[index % len(EDGES)]
            item["ic"], item["auto"] = ic, ic >= item["threshold"]
        item["latency_ms"] = round(float(rng.lognormal(1.2, 0.6)), 3) if index % 7 else 4.0
        item["batch"] = {"size": 3, "index": index % 3}
        if index % 11 == 0 and item["ts"] < "2026-11-03T12":  # a model served half the time
            item["model"]["name"] = "autocode-naf2025"
            item["threshold"] = 0.3
            item["auto"] = item["ic"] >= 0.3
    root = tmp_path_factory.mktemp("rollups")
    source, target = LocalStore(root / "log"), LocalStore(root / "parquet")
    for day in sorted({r["ts"][:10] for r in records}):
        source.write(segment_key(day), lines(r for r in records if r["ts"].startswith(day)))
    etl.compact(source, target)
    return target.root


@pytest.fixture(scope="module")
def day0():  # module-scoped twin of conftest's
    from datetime import UTC, datetime

    return datetime(2026, 11, 2, tzinfo=UTC)


def _raw(con, sql: str, filters: query.Filters) -> pd.DataFrame:
    """Plain SQL over the rows (the ``predictions`` view), restricted to ``filters``."""
    where, params = filters.where()
    return con.execute(sql.format(where=where), params).df()


def _same(left: pd.DataFrame, right: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(
        left.reset_index(drop=True),
        right.reset_index(drop=True),
        check_dtype=False,
        check_exact=False,
        rtol=1e-12,
    )


def _same_facts(left: dict[str, Any], right: dict[str, Any]) -> None:
    """Equal, but for the means (sums added in another order)."""
    assert left.keys() == right.keys()
    for key, value in left.items():
        if key in ("auto_rate", "ic_mean") and value is not None:
            assert value == pytest.approx(right[key], rel=1e-12), key
        else:
            assert value == right[key], key


def _connections(root: Path, text: str) -> tuple[Any, Any, query.Window]:
    window = query.Window.parse(text)
    dataset = query.Dataset(str(root))
    return dataset.connect(window), dataset.connect(window, use_rollups=False), window


@pytest.mark.parametrize("text", WINDOWS)
@pytest.mark.parametrize("versions", [(), ("4",)])
def test_every_metric_equals_the_rows(compacted: Path, text: str, versions) -> None:
    fast, rows, window = _connections(compacted, text)
    assert query.from_rollups(fast) == window.whole_hours()
    assert not query.from_rollups(rows)
    filters = query.Filters(window, versions)
    assert _raw(rows, "SELECT count(*) AS n FROM predictions WHERE {where}", filters)["n"][0] > 200

    facts = query.summary(fast, filters)
    _same_facts(facts, query.summary(rows, filters))
    raw = _raw(
        rows,
        """SELECT count(*) AS predictions,
                  count(*) FILTER (WHERE coalesce(batch_index, 0) = 0) AS requests,
                  avg(auto::INTEGER) AS auto_rate, avg(ic) AS ic_mean, median(ic) AS ic_median,
                  quantile_cont(latency_ms, 0.5) AS latency_p50_ms,
                  quantile_cont(latency_ms, 0.99) AS latency_p99_ms,
                  min(ts) AS first, max(ts) AS last, count(DISTINCT model_version) AS model_versions
           FROM predictions WHERE {where}""",
        filters,
    ).iloc[0]
    for key in ("predictions", "requests", "first", "last", "model_versions"):
        assert facts[key] == raw[key], key
    for key in ("auto_rate", "ic_mean"):  # sums added in another order
        assert facts[key] == pytest.approx(raw[key], rel=1e-12), key
    for key in ("ic_median", "latency_p50_ms", "latency_p99_ms"):  # exact, not binned
        assert facts[key] == raw[key], key

    for by in ("hour", "day"):
        volume = query.volume(fast, filters, by)
        _same(volume, query.volume(rows, filters, by))
        _same(
            volume,
            _raw(
                rows,
                f"""SELECT date_trunc('{by}', ts) AS period, count(*) AS predictions,
                           count(*) FILTER (WHERE coalesce(batch_index, 0) = 0) AS requests,
                           count(*) FILTER (WHERE auto) AS automatic,
                           avg(auto::INTEGER) AS auto_rate
                    FROM predictions WHERE {{where}} GROUP BY 1 ORDER BY 1""",
                filters,
            ),
        )
        latency = query.latency(fast, filters, by)
        _same(latency, query.latency(rows, filters, by))
        expected = _raw(
            rows,
            f"""SELECT date_trunc('{by}', ts) AS period, count(*) AS predictions,
                       quantile_cont(latency_ms, 0.5) AS p50_ms,
                       quantile_cont(latency_ms, 0.9) AS p90_ms,
                       quantile_cont(latency_ms, 0.99) AS p99_ms,
                       max(latency_ms) AS max_ms
                FROM predictions WHERE {{where}} GROUP BY 1 ORDER BY 1""",
            filters,
        )
        pd.testing.assert_frame_equal(latency, expected, check_dtype=False, check_exact=True)

    grid = query.automation_by_threshold(fast, filters, THRESHOLDS)
    _same(grid, query.automation_by_threshold(rows, filters, THRESHOLDS))
    counts = ", ".join(
        f"count(*) FILTER (WHERE ic >= {t!r}) AS t{i}" for i, t in enumerate(THRESHOLDS)
    )
    raw = _raw(rows, f"SELECT count(*) AS n, {counts} FROM predictions WHERE {{where}}", filters)
    assert grid["automatic"].tolist() == [raw[f"t{i}"][0] for i in range(len(THRESHOLDS))]
    assert grid["predictions"].unique().tolist() == [raw["n"][0]]

    ic = _raw(rows, "SELECT ic FROM predictions WHERE {where} AND ic IS NOT NULL", filters)["ic"]
    for bins in (20, 10, 1000):
        hist = query.ic_histogram(fast, filters, bins)
        _same(hist, query.ic_histogram(rows, filters, bins))
        expected = [
            int(((ic >= j / bins) & ((ic < (j + 1) / bins) | (j == bins - 1))).sum())
            for j in range(bins)
        ]
        assert hist["predictions"].tolist() == expected

    probabilities = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0)
    found = query.ic_quantiles(fast, filters, probabilities)
    assert found == query.ic_quantiles(rows, filters, probabilities)
    listing = ", ".join(map(repr, probabilities))
    sql = f"SELECT quantile_cont(ic, [{listing}]) AS q FROM predictions WHERE {{where}}"
    raw = _raw(rows, sql, filters)
    assert list(found.values()) == list(raw["q"][0])

    by_ic = query.ic_by_model(fast, filters)
    _same(by_ic, query.ic_by_model(rows, filters))
    _same(
        by_ic,
        _raw(
            rows,
            """SELECT model_version, count(*) AS predictions, avg(ic) AS ic_mean,
                      quantile_cont(ic, 0.5) AS ic_median
               FROM predictions WHERE {where} GROUP BY 1 ORDER BY 1""",
            filters,
        ),
    )
    models = query.by_model(fast, filters)
    _same(models, query.by_model(rows, filters))
    _same(
        models,
        _raw(
            rows,
            """SELECT model_name, model_version, count(*) AS predictions,
                      avg(auto::INTEGER) AS auto_rate, avg(ic) AS ic_mean,
                      quantile_cont(latency_ms, 0.5) AS latency_p50_ms,
                      quantile_cont(latency_ms, 0.99) AS latency_p99_ms,
                      min(ts) AS first_seen, max(ts) AS last_seen
               FROM predictions WHERE {where} GROUP BY 1, 2 ORDER BY first_seen, 1, 2""",
            filters,
        ),
    )
    assert len(models) == (4 if not versions else 2)  # two names, two versions
    _same(query.thresholds_in_use(fast, filters), query.thresholds_in_use(rows, filters))
    codes = code_counts(fast, filters).sort_values("code")
    _same(codes, code_counts(rows, filters).sort_values("code"))
    _same(
        codes[["code", "predictions", "auto_rate", "ic_mean"]],
        _raw(
            rows,
            """SELECT code, count(*) AS predictions, avg(auto::INTEGER) AS auto_rate,
                      avg(ic) AS ic_mean
               FROM predictions WHERE {where} GROUP BY 1 ORDER BY 1""",
            filters,
        ),
    )
    _same(query.uncertain(fast, filters, 7), query.uncertain(rows, filters, 7))
    # the KS test's input: the IC per 0.001 bin (a bin counts the grid values <= the IC)
    ks = drift.ic_counts(fast, filters).sort_values("ic")
    _same(ks, drift.ic_counts(rows, filters).sort_values("ic"))
    binned = pd.Series([sum(v >= j / 1000 for j in range(1, 1001)) for v in ic]).value_counts()
    assert dict(zip(np.round(ks["ic"] * 1000).astype(int), ks["n"], strict=True)) == (
        binned.to_dict()
    )


def test_hourly_latency_of_hours_served_by_several_models(compacted: Path) -> None:
    """The compaction's percentiles of all the models of an hour, of one model, and (when the
    filters keep some of an hour's models but not one) exact quantiles ranked from the values."""
    fast, rows, window = _connections(compacted, "2026-11-03..2026-11-04")
    models = fast.execute(
        """SELECT ts, count(*) AS every, count(*) FILTER (WHERE model_version = '4') AS v4
           FROM latency_hours WHERE NOT every_model GROUP BY 1"""
    ).df()
    assert (models["every"] > 1).sum() >= 20  # read from the hours' "every model" rows
    assert ((models["v4"] == 1) & (models["every"] > 1)).sum() >= 1  # one model of several
    assert ((models["v4"] > 1) & (models["v4"] < models["every"])).sum() >= 1  # ranked
    for versions in ((), ("4",), ("3", "4")):
        filters = query.Filters(window, versions)
        _same(query.latency(fast, filters, "hour"), query.latency(rows, filters, "hour"))


def test_days_compacted_before_the_rollups_are_read_from_their_rows(
    compacted: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "old"
    for path in compacted.rglob("*"):
        if path.is_file():
            (copy / path.relative_to(compacted)).parent.mkdir(parents=True, exist_ok=True)
            (copy / path.relative_to(compacted)).write_bytes(path.read_bytes())
    manifest_path = copy / "date=2026-11-03" / etl.MANIFEST
    manifest = json.loads(manifest_path.read_text())
    del manifest["rollups"]  # as an older compaction wrote it
    manifest_path.write_text(json.dumps(manifest))
    window = query.Window.parse("2026-11-02..2026-11-05")
    old = query.Dataset(str(copy)).connect(window)
    assert not query.from_rollups(old)
    new = query.Dataset(str(compacted)).connect(window)
    filters = query.Filters(window)
    _same_facts(query.summary(old, filters), query.summary(new, filters))
    _same(query.latency(old, filters), query.latency(new, filters))


def test_quantiles_of_ties_and_tiny_groups(tmp_path: Path, day0) -> None:
    """Order statistics that fall in one bin, on a bin's edge, in a group of one."""
    from .conftest import record

    records = [record(day0 + timedelta(minutes=i), ic=0.5, latency_ms=2.0) for i in range(9)]
    records += [record(day0 + timedelta(hours=1), ic=0.05, latency_ms=7.5)]  # none automatic
    records += [record(day0 + timedelta(hours=2, minutes=i), ic=i / 7) for i in range(8)]
    source, target = LocalStore(tmp_path / "log"), LocalStore(tmp_path / "parquet")
    source.write(segment_key("2026-11-02"), lines(records))
    etl.compact(source, target)
    fast, rows, window = _connections(target.root, "2026-11-02..2026-11-03")
    probabilities = (0.0, 0.05, 0.5, 0.51, 0.9, 1.0)
    for by in ((), ("date_trunc('hour', ts)",), ("model_version",)):
        got = query.quantiles(fast, "ic", query.Filters(window), probabilities, by)
        _same(got, query.quantiles(rows, "ic", query.Filters(window), probabilities, by))
        groups = ", ".join(by)
        listing = ", ".join(map(repr, probabilities))
        expected = rows.execute(
            f"SELECT {groups + ',' if groups else ''} quantile_cont(ic, [{listing}]) AS q "
            f"FROM predictions {'GROUP BY ' + groups if groups else ''} ORDER BY ALL"
        ).df()
        assert got[[c for c in got.columns if c.startswith("p")]].to_numpy().tolist() == [
            list(q) for q in expected["q"]
        ]
    assert query.latency(fast, query.Filters(window), "hour")["p50_ms"].tolist() == [2.0, 7.5, 3.0]
    volume = query.volume(fast, query.Filters(window), "hour")
    _same(volume, query.volume(rows, query.Filters(window), "hour"))
    assert volume["auto_rate"].tolist()[:2] == [1.0, 0.0]  # a rate of 0, not "no rate"
    assert (
        query.summary(
            fast,
            query.Filters(one_hour := query.Window.parse("2026-11-02T01:00..2026-11-02T02:00")),
        )["auto_rate"]
        == 0.0
    )
    assert code_counts(fast, query.Filters(one_hour))["auto_rate"].tolist() == [0.0]
    assert math.isclose(query.summary(fast, query.Filters(window))["ic_median"], 0.5)


def test_the_compaction_writes_the_rollups_in_its_manifest(compacted: Path) -> None:
    for day, manifest in etl.manifests(LocalStore(compacted)).items():
        assert set(manifest["rollups"]) == set(rollups.NAMES), day
        for name, key in manifest["rollups"].items():
            assert (compacted / key).is_file() and key.startswith(f"date={day}/rollup-{name}-")
