# ruff: noqa: S608 -- templates of our own SQL; only table names and constants are inserted.
"""Hourly roll-ups of the predictions: what every metric but the list of uncertain predictions is
computed from, so that a dashboard query over months reads a few thousand rows per day, not
millions — and gives exactly the numbers the rows give.

Seven relations, each defined once by a template on a source of rows (`relation_sql`):

- ``hourly``: per hour, model, threshold and decision: predictions, requests, number and sum of
  the IC, first and last time;
- ``codes``: per hour, model version, top-1 code and decision: predictions, number and sum of the
  IC;
- ``ic``: per hour and model (name and version), predictions per IC bin of width 0.001.
  ``ic_bin`` is the number of the values 0.001, 0.002, …, 1 (as floating-point numbers) that
  are ≤ the IC, so that ``IC >= t`` exactly when ``ic_bin >= 1000 · t`` for every threshold t
  with 3 decimals;
- ``latency``: per hour and model, predictions per latency bucket (`LATENCY_STEPS` per
  doubling, from 0.001 ms);
- ``latency_hours``: per hour, for each model and for all of them together, the latency's p50,
  p90, p99 and maximum (the hourly latency chart reads them as they are: percentiles do not add
  up);
- ``ic_values`` and ``latency_values``: every IC (latency) with its hour, model and bin
  (bucket), sorted by value. They locate exact quantiles: the bins' counts say in which bin the
  k-th value lies and its rank there; only that bin's values are read (the file is sorted and cut
  in small row groups, so DuckDB skips the others), see `autocode.monitor.query.quantiles`.

Counts, sums, first and last times, rates and quantiles are thus exact. Only the KS test of the
drift page works on the IC to 0.001 (its ``ic`` bins).

The compaction writes them next to each day's rows (listed in its manifest). For a window that
does not start and end on whole hours, the same relations are computed from the rows with the
exact time instead of the hour (`ROW_TIME`), so the metrics are the same code either way.
"""

from __future__ import annotations

import pyarrow as pa

HOUR_TIME = "date_trunc('hour', ts)"
ROW_TIME = "ts"
IC_SCALE = 1000
LATENCY_BASE_MS = 0.001
LATENCY_STEPS = 256  # buckets per doubling (0.27 % wide: a bucket holds few values)
VALUES_ROW_GROUP = 2048  # rows per row group of the sorted value files: what a bin read skips by

# floor(1000 · ic), corrected by one where the product rounded across an integer: then
# ic_bin >= j  <=>  ic >= j / 1000 (j / 1000 is the same double as the literal 0.jjj).
_IC_FLOOR = f"floor(ic * {IC_SCALE})"
IC_BIN = f"""(CASE WHEN ic >= ({_IC_FLOOR} + 1) / {IC_SCALE} THEN {_IC_FLOOR} + 1
                  WHEN ic < {_IC_FLOOR} / {IC_SCALE} THEN {_IC_FLOOR} - 1
                  ELSE {_IC_FLOOR} END)::SMALLINT"""
LATENCY_BUCKET = (
    f"floor(log2(greatest(latency_ms, {LATENCY_BASE_MS}) / {LATENCY_BASE_MS})"
    f" * {LATENCY_STEPS})::SMALLINT"
)

TEMPLATES = {
    "hourly": """SELECT {time} AS ts, model_name, model_version, threshold, auto,
                        count(*)::BIGINT AS predictions,
                        count(*) FILTER (WHERE coalesce(batch_index, 0) = 0)::BIGINT AS requests,
                        count(ic)::BIGINT AS ic_count, sum(ic) AS ic_sum,
                        min(ts) AS first_ts, max(ts) AS last_ts
                 FROM {source} GROUP BY ALL""",
    "codes": """SELECT {time} AS ts, model_version, code, auto,
                       count(*)::BIGINT AS predictions, count(ic)::BIGINT AS ic_count,
                       sum(ic) AS ic_sum
                FROM {source} GROUP BY ALL""",
    "ic": f"""SELECT {{time}} AS ts, model_name, model_version, {IC_BIN} AS ic_bin,
                     count(*)::BIGINT AS predictions
              FROM {{source}} WHERE ic IS NOT NULL GROUP BY ALL""",
    "latency": f"""SELECT {{time}} AS ts, model_name, model_version, {LATENCY_BUCKET} AS bucket,
                          count(*)::BIGINT AS predictions
                   FROM {{source}} WHERE latency_ms IS NOT NULL GROUP BY ALL""",
    # one row per hour and model, and one per hour for all its models together (every_model)
    "latency_hours": """SELECT hour AS ts, model_name, model_version,
                               grouping(model_name, model_version) = 3 AS every_model,
                               count(*)::BIGINT AS n,
                               quantile_cont(latency_ms, 0.5) AS p50_ms,
                               quantile_cont(latency_ms, 0.9) AS p90_ms,
                               quantile_cont(latency_ms, 0.99) AS p99_ms,
                               max(latency_ms) AS max_ms
                        FROM (SELECT {time} AS hour, model_name, model_version, latency_ms
                              FROM {source} WHERE latency_ms IS NOT NULL)
                        GROUP BY GROUPING SETS ((hour, model_name, model_version), (hour))""",
    "ic_values": f"""SELECT {{time}} AS ts, model_name, model_version, {IC_BIN} AS bucket,
                            ic AS value
                     FROM {{source}} WHERE ic IS NOT NULL""",
    "latency_values": f"""SELECT {{time}} AS ts, model_name, model_version,
                                 {LATENCY_BUCKET} AS bucket,
                                 latency_ms AS value
                          FROM {{source}} WHERE latency_ms IS NOT NULL""",
}
NAMES = tuple(TEMPLATES)
SORTED = ("ic_values", "latency_values")


def relation_sql(name: str, source: str, time: str = HOUR_TIME) -> str:
    return TEMPLATES[name].format(time=time, source=source)


def compute(table: pa.Table) -> dict[str, pa.Table]:
    """The roll-ups of a day's rows (an Arrow table of `schema.SCHEMA`); the value relations
    sorted by value."""
    import duckdb

    con = duckdb.connect()
    try:
        con.execute("SET preserve_insertion_order = true")
        con.register("day_rows", table)
        out = {}
        for name in NAMES:
            sql = relation_sql(name, "day_rows")
            if name in SORTED:
                sql += " ORDER BY value"
            out[name] = con.sql(sql).to_arrow_table()
        return out
    finally:
        con.close()


def row_group_size(name: str) -> int | None:
    """Rows per row group to write roll-up ``name`` with (None: the writer's default)."""
    return VALUES_ROW_GROUP if name in SORTED else None
