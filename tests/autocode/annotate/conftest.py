"""Fixtures of the campaign tests: prediction logs written as the API writes them and compacted
by the monitoring ETL (the records of ``tests/autocode/monitor/conftest.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from autocode.monitor import etl
from autocode.monitor.storage import LocalStore

from ..monitor.conftest import lines, segment_key


def compact_log(root: Path, records: Sequence[dict[str, Any]]) -> Path:
    """``records`` shipped as one segment per day, then compacted: the Parquet folder."""
    source, target = LocalStore(root / "log"), LocalStore(root / "parquet")
    for day in sorted({r["ts"][:10] for r in records}):
        source.write(segment_key(day), lines([r for r in records if r["ts"].startswith(day)]))
    etl.compact(source, target)
    return target.root
