"""Fixtures of the monitoring tests: prediction-log records as the API writes them, segments in
a folder or in a real S3 (SeaweedFS, from ``tests/autocode/conftest.py``)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest


def record(
    ts: datetime,
    code: str = "10.71C",
    ic: float = 0.5,
    *,
    threshold: float = 0.15,
    version: str = "3",
    text: str = "boulangerie",
    latency_ms: float = 3.0,
    categorical: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One record of the prediction log (docs/autocode-api.md, "The prediction log")."""
    p1 = round(min(1.0, ic + (1 - ic) / 2), 6)
    return {
        "id": uuid.uuid4().hex,
        "ts": ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "route": "GET /predict",
        "client": "key:0123abcd",
        "input": {"text": text, **(categorical or {})},
        "k": 2,
        "codes": [code, "56.10A"],
        "probabilities": [p1, round(p1 - ic, 6)],
        "ic": round(ic, 6),
        "auto": ic >= threshold,
        "threshold": threshold,
        "model": {"name": "autocode-naf", "version": version},
        "latency_ms": latency_ms,
        "batch": {"size": 1, "index": 0},
        **extra,
    }


def lines(records: Iterable[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in records)


_sequence = iter(range(1, 10**9))


def segment_key(day: str, instance: str = "api-0") -> str:
    """A segment key as the shipper writes it: ``date=D/<opening>-<instance>-<boot>-<seq>``."""
    opened = day.replace("-", "") + "T120000000000Z"
    return f"date={day}/{opened}-{instance}-a1b2c3-{next(_sequence):06d}.jsonl"


def random_records(
    n: int,
    start: datetime,
    span: timedelta,
    rng: np.random.Generator,
    codes: list[str],
    weights: np.ndarray | None = None,
    ic_beta: tuple[float, float] = (2.0, 3.0),
    version: str = "3",
) -> list[dict[str, Any]]:
    """``n`` records spread over [start, start + span), codes drawn with ``weights``."""
    offsets = np.sort(rng.uniform(0, span.total_seconds(), n))
    chosen = rng.choice(len(codes), size=n, p=weights)
    ics = rng.beta(*ic_beta, size=n)
    return [
        record(start + timedelta(seconds=float(o)), codes[c], float(i), version=version)
        for o, c, i in zip(offsets, chosen, ics, strict=True)
    ]


@pytest.fixture
def day0() -> datetime:
    return datetime(2026, 11, 2, tzinfo=UTC)
