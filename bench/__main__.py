"""Run the benchmarks and write their results to ``bench/results/<name>.json``.

Each ``bench/bench_<name>.py`` module defines ``run() -> dict`` returning JSON-serialisable
measurements (with units in the key names, e.g. ``p99_ms``). ``python -m bench NAME...`` runs
only the named ones.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

BENCH_DIR = Path(__file__).parent
RESULTS_DIR = BENCH_DIR / "results"


def available() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in BENCH_DIR.glob("bench_*.py"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "names", nargs="*", help=f"benchmarks to run (default: all of {available()})"
    )
    args = parser.parse_args(argv)
    names = args.names or available()
    unknown = sorted(set(names) - set(available()))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {available()}")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    failed = 0
    for name in names:
        print(f"== {name}", flush=True)
        started = time.perf_counter()
        try:
            module = importlib.import_module(f"bench.bench_{name}")
            result = module.run()
        except Exception as exc:  # a broken benchmark must not hide the others' results
            print(f"   FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
            failed += 1
            continue
        record = {
            "benchmark": name,
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {"python": platform.python_version(), "cpus": _cpus()},
            "wall_s": round(time.perf_counter() - started, 2),
            "results": result,
        }
        out = RESULTS_DIR / f"{name}.json"
        out.write_text(json.dumps(record, indent=2) + "\n")
        print(json.dumps(result, indent=2))
        print(f"   -> {out}")
    return 1 if failed else 0


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    raise SystemExit(main())
