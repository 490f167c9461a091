"""autocode monitoring: dashboard queries on 10 million logged predictions, the compaction's
throughput, the API's throughput with a compaction running beside it, and the drift tests'
false-alarm rate over many i.i.d. pairs of windows.

- ``queries``: 10,000,000 generated predictions (`autocode.monitor.synthetic`: 732 NAF
  subclasses with Zipf-like popularity, two model versions) over 30 days, compacted as the ETL
  writes them (one manifest and file per day); each dashboard page (its DuckDB queries and its
  plotly figures) timed over all 30 days (the drift page: 15 days against 15), DuckDB on 2
  threads, from the hourly roll-ups (`autocode.monitor.rollups`). Cold (first) and warm (median
  of 3); ``first_connect_s``: the first connection, which reads the small roll-ups into memory.
  Target: <= 1 s each.
- ``etl``: JSON-lines segments as the API ships them (10,000 records each) compacted into
  Parquet on local disk: records/s.
- ``api_beside_compaction``: the API (``bench_autocode_api``'s server and load generator, log
  on) alone, then with ``autocode logs compact`` compacting a large log in a loop beside it;
  rounds alternate. Target: throughput lower by <= 10 %.
- ``false_alarms``: pairs of i.i.d. windows (200 and 2,000 predictions each) through the drift
  decision (alpha 0.01): the share flagged, and the share of shifted pairs flagged (power).

Set ``AUTOCODE_MONITOR_BENCH_ROWS`` to run the query benchmark on fewer rows.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ROWS = int(os.environ.get("AUTOCODE_MONITOR_BENCH_ROWS", "10000000"))
DAYS = 30
START = datetime(2026, 10, 1, tzinfo=UTC)


def _codes() -> tuple[list[str], Any]:
    from autocode.nomenclature import load_naf2008

    nomenclature = load_naf2008()
    return nomenclature.codes("subclass"), nomenclature


def _generate(root: Path, rows: int, codes: list[str]) -> None:
    from autocode.monitor.etl import CompactOptions, commit_day
    from autocode.monitor.storage import LocalStore
    from autocode.monitor.synthetic import synthetic_table

    store = LocalStore(root)
    per_day = rows // DAYS
    for index in range(DAYS):
        start = START + timedelta(days=index)
        table = synthetic_table(per_day, codes, start, start + timedelta(days=1), seed=index)
        commit_day(store, start.date().isoformat(), table, 1, {}, 0, [], CompactOptions())


def _time(function: Any, runs: int = 3) -> dict[str, float]:
    """Wall time, cold (first call) and warm (median of ``runs``), and the process's CPU time
    (all its threads: DuckDB's included) of the warm calls: on a machine shared with other work
    the wall time grows with the load, the CPU time does not; on 2 free cores the wall time is at
    most the CPU time."""
    started = time.perf_counter()
    function()
    cold = time.perf_counter() - started
    warm, cpu = [], []
    for _ in range(runs):
        started, cpu_started = time.perf_counter(), time.process_time()
        function()
        warm.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
    return {
        "cold_s": round(cold, 3),
        "warm_s": round(statistics.median(warm), 3),
        "warm_cpu_s": round(statistics.median(cpu), 3),
    }


def queries() -> dict[str, Any]:
    from autocode.monitor import query, report

    codes, nomenclature = _codes()
    root = Path(tempfile.mkdtemp(prefix="autocode-monitor-bench-"))
    try:
        started = time.perf_counter()
        _generate(root, ROWS, codes)
        generated_s = time.perf_counter() - started
        size = sum(p.stat().st_size for p in root.rglob("*.parquet"))
        everything = query.Window(START, START + timedelta(days=DAYS))
        half = START + timedelta(days=DAYS // 2)
        selection = report.Selection(
            query.Window(half, everything.end), query.Window(START, half), "division", 0.3
        )
        whole = report.Selection(everything, query.Window(START, half), "division", 0.3)
        dataset = query.Dataset(str(root))
        started = time.perf_counter()  # reads the days' small roll-ups into memory
        con = dataset.connect(everything, threads=2)
        first_connect_s = time.perf_counter() - started
        load = [round(x, 2) for x in os.getloadavg()]
        assert query.summary(con, whole.filters)["predictions"] == ROWS // DAYS * DAYS
        pages = {
            "volume": lambda: report.volume_page(con, whole),
            "automation": lambda: report.automation_page(con, whole),
            "ic": lambda: report.ic_page(con, whole),
            "codes_division": lambda: report.codes_page(con, whole, nomenclature),
            "codes_subclass": lambda: report.codes_page(
                con, report.Selection(everything, everything, "subclass"), nomenclature
            ),
            "drift": lambda: report.drift_page(con, selection, nomenclature),
            "uncertain": lambda: report.uncertain_page(con, whole),
            "connect": lambda: dataset.connect(everything, threads=2),
        }
        timings = {name: _time(function) for name, function in pages.items()}
        rollup_mb = sum(p.stat().st_size for p in root.rglob("rollup-*.parquet")) / 1e6
        return {
            "rows": ROWS,
            "days": DAYS,
            "parquet_mb": round(size / 1e6, 1),
            "of_which_rollups_mb": round(rollup_mb, 1),
            "generate_s": round(generated_s, 1),
            "load_average_at_start": load,
            "first_connect_s": round(first_connect_s, 3),
            "pages": timings,
            "slowest_warm_s": max(t["warm_s"] for t in timings.values()),
            "slowest_warm_cpu_s": max(t["warm_cpu_s"] for t in timings.values()),
            "target_s": 1.0,
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _write_log(root: Path, records: int, codes: list[str], seed: int = 0) -> int:
    from autocode.monitor.storage import LocalStore
    from autocode.monitor.synthetic import synthetic_table, to_segments

    store = LocalStore(root)
    table = synthetic_table(records, codes, START, START + timedelta(days=3), seed=seed)
    size = 0
    for key, body in to_segments(table, records_per_segment=10_000):
        store.write(key, body)
        size += len(body)
    return size


def etl() -> dict[str, Any]:
    from autocode.monitor.etl import compact
    from autocode.monitor.storage import LocalStore

    codes, _ = _codes()
    root = Path(tempfile.mkdtemp(prefix="autocode-etl-bench-"))
    try:
        records = 300_000
        size = _write_log(root / "log", records, codes)
        result = compact(LocalStore(root / "log"), LocalStore(root / "parquet"))
        assert result.new_rows == records
        rerun = compact(LocalStore(root / "log"), LocalStore(root / "parquet"))
        return {
            "records": records,
            "jsonl_mb": round(size / 1e6, 1),
            "seconds": round(result.seconds, 2),
            "records_per_s": round(records / result.seconds),
            "mb_per_s": round(size / 1e6 / result.seconds, 1),
            "rerun_nothing_new_s": round(rerun.seconds, 3),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def api_beside_compaction() -> dict[str, Any]:
    from autocode.serve.auth import KeysFile
    from bench.autocode_models import default_model
    from bench.bench_autocode_api import (
        SUSTAINED_BATCH,
        SUSTAINED_CLIENTS,
        _load,
        _Server,
    )

    codes, _ = _codes()
    model, _ = default_model()
    root = Path(tempfile.mkdtemp(prefix="autocode-api-compaction-bench-"))
    _, key = KeysFile(root / "keys.json").add("bench")
    _write_log(root / "log", 400_000, codes)
    server = _Server(model, root, root / "keys.json", log_enabled=True)
    rounds: dict[str, list[float]] = {"alone": [], "beside_compaction": []}
    compactions = 0
    try:
        for _ in range(4):
            for name in rounds:
                compactor = None
                if name == "beside_compaction":
                    shutil.rmtree(root / "parquet", ignore_errors=True)
                    compactor = subprocess.Popen(
                        [sys.executable, "-m", "autocode.cli", "logs", "compact",
                         "--source", str(root / "log"), "--output", str(root / "parquet")],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO,
                    )  # fmt: skip
                    time.sleep(3.0)  # past its start-up: compacting when the load begins
                    assert compactor.poll() is None, "the compaction ended before the load"
                sustained = _load(
                    "sustained", port=server.port, key=key, clients=SUSTAINED_CLIENTS,
                    batch=SUSTAINED_BATCH, seconds=4.0,
                )  # fmt: skip
                if compactor is not None:
                    still_running = compactor.poll() is None
                    compactor.kill()
                    compactor.wait()
                    compactions += still_running
                rounds[name].append(sustained["predictions_per_s"])
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    alone = statistics.median(rounds["alone"])
    beside = statistics.median(rounds["beside_compaction"])
    return {
        "model": str(model),
        "predictions_per_s_alone": round(alone, 1),
        "predictions_per_s_beside_compaction": round(beside, 1),
        "drop_percent": round(100 * (alone - beside) / alone, 1),
        "rounds": rounds,
        "rounds_with_compaction_running_throughout": compactions,
        "target_drop_percent": 10,
    }


def false_alarms(trials: int = 1000) -> dict[str, Any]:
    import pandas as pd

    from autocode.monitor import drift
    from autocode.monitor.levels import level_table

    codes, nomenclature = _codes()
    rng = np.random.default_rng(2026)
    weights = 1.0 / np.arange(1, len(codes) + 1) ** 1.1
    weights = rng.permutation(weights / weights.sum())
    mapping = level_table(codes, nomenclature).set_index("code")
    config = drift.DriftConfig()
    sections = mapping.loc[codes, "section"].to_numpy()
    shifted = weights * np.where(np.isin(sections, ["F", "I"]), 2.0, 1.0)
    shifted /= shifted.sum()

    def sample(n: int, p: np.ndarray) -> drift.Sample:
        drawn = pd.Series(rng.choice(codes, size=n, p=p)).value_counts()
        values, counts = np.unique(np.round(rng.beta(0.9, 2.2, size=n), 6), return_counts=True)
        by_level = {
            level: drawn.groupby(mapping.loc[drawn.index, level].to_numpy()).sum()
            for level in config.levels
        }
        return drift.Sample("w", values, counts, by_level)

    out: dict[str, Any] = {"alpha": config.alpha, "levels": list(config.levels)}
    for size in (200, 2000):
        iid = sum(
            drift.compare_counts(sample(size, weights), sample(size, weights), config).drift
            for _ in range(trials)
        )
        power = sum(
            drift.compare_counts(sample(size, weights), sample(size, shifted), config).drift
            for _ in range(trials // 5)
        )
        out[f"n{size}"] = {
            "iid_pairs": trials,
            "false_alarm_rate": iid / trials,
            "shifted_pairs": trials // 5,
            "detected_rate_sections_F_I_doubled": power / (trials // 5),
        }
    return out


def run() -> dict[str, Any]:
    load = [round(x, 2) for x in os.getloadavg()]
    results = {
        "load_average_before": load,
        "queries": queries(),
        "etl": etl(),
        "false_alarms": false_alarms(),
        "api_beside_compaction": api_beside_compaction(),
    }
    results["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    return results
