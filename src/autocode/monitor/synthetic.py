"""Generated prediction logs, for benchmarks and demonstrations (never for metrics of record).

`synthetic_table` draws ``n`` predictions column by column with NumPy (10 million in seconds):
codes from a Zipf-like popularity over the given subclasses, an IC from a Beta distribution,
the automatic decision from the threshold, two model versions, log-normal latencies, texts from
a small vocabulary. `to_segments` turns a table into JSON-lines segments exactly as the API's
spool writes them (the ETL's input).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import datetime

import numpy as np
import pyarrow as pa

from autocode.monitor import schema

WORDS = (
    "boulangerie",
    "pâtisserie",
    "restaurant",
    "traditionnel",
    "vente",
    "détail",
    "fabrication",
    "conseil",
    "entreprises",
    "transport",
    "marchandises",
    "nettoyage",
    "bâtiments",
    "location",
    "logements",
    "commerce",
    "gros",
    "alimentaire",
    "coiffure",
    "soins",
    "beauté",
    "travaux",
    "maçonnerie",
    "plomberie",
    "électricité",
    "informatique",
    "développement",
    "logiciels",
    "formation",
    "continue",
    "adultes",
    "agence",
    "immobilière",
)


def synthetic_table(
    n: int,
    codes: Sequence[str],
    start: datetime,
    end: datetime,
    *,
    seed: int = 0,
    threshold: float = 0.15,
    ic_beta: tuple[float, float] = (0.9, 2.2),
    versions: Sequence[str] = ("3", "4"),
) -> pa.Table:
    rng = np.random.default_rng(seed)
    codes_array = np.asarray(codes, dtype=object)
    weights = 1.0 / np.arange(1, len(codes) + 1) ** 1.1
    weights = rng.permutation(weights / weights.sum())
    first = rng.choice(len(codes), size=n, p=weights)
    second = (first + 1 + rng.integers(0, len(codes) - 1, size=n)) % len(codes)
    ic = np.round(rng.beta(*ic_beta, size=n), 6)
    p1 = np.round(np.minimum(1.0, ic + (1 - ic) * rng.uniform(0.3, 0.5, size=n)), 6)
    p2 = np.round(np.maximum(0.0, p1 - ic), 6)
    span_us = int((end - start).total_seconds() * 1e6)
    ts = np.sort(rng.integers(0, span_us, size=n)) + int(start.timestamp() * 1e6)
    batch_size = rng.choice([1, 1, 1, 2, 5, 10], size=n)
    vocabulary = np.asarray(WORDS, dtype=object)
    text = [" ".join(vocabulary[rng.integers(0, len(WORDS), size=3)]) for _ in range(min(n, 5000))]
    version_index = (np.arange(n) >= n // 2).astype(int) if len(versions) > 1 else np.zeros(n)
    code1, code2 = codes_array[first], codes_array[second]
    return pa.table(
        {
            "id": pa.array([f"{seed:04x}{i:028x}" for i in range(n)]),
            "ts": pa.array(ts, type=pa.timestamp("us")),
            "route": pa.array(np.where(batch_size > 1, "POST /predict", "GET /predict")),
            "client": pa.array(np.where(rng.random(n) < 0.7, "key:app1", "key:app2")),
            "model_name": pa.array(["autocode-naf"] * n),
            "model_version": pa.array(np.asarray(versions, dtype=object)[version_index]),
            "model_alias": pa.nulls(n, pa.string()),
            "text": pa.array(np.asarray(text, dtype=object)[np.arange(n) % len(text)]),
            "categorical": pa.nulls(n, schema.SCHEMA.field("categorical").type),
            "k": pa.array(np.full(n, 2), type=pa.int16()),
            "codes": pa.array(np.stack([code1, code2], axis=1).tolist(), pa.list_(pa.string())),
            "probabilities": pa.array(
                np.stack([p1, p2], axis=1).astype(np.float32).tolist(), pa.list_(pa.float32())
            ),
            "code": pa.array(code1),
            "probability": pa.array(p1.astype(np.float32)),
            "ic": pa.array(ic),
            "threshold": pa.array(np.full(n, threshold)),
            "auto": pa.array(ic >= threshold),
            "latency_ms": pa.array(rng.lognormal(1.2, 0.5, size=n).astype(np.float32)),
            "batch_size": pa.array(batch_size.astype(np.int32)),
            "batch_index": pa.array(np.zeros(n, dtype=np.int32)),
            "extra": pa.nulls(n, pa.string()),
            "segment": pa.array(["synthetic"] * n),
        },
        schema=schema.SCHEMA,
    )


def to_records(table: pa.Table) -> Iterator[dict]:
    """The log records (docs/autocode-api.md) the rows of ``table`` come from."""
    for row in table.to_pylist():
        item = {"text": row["text"], **dict(row["categorical"] or [])}
        yield {
            "id": row["id"],
            "ts": row["ts"].strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "route": row["route"],
            "client": row["client"],
            "input": item,
            "k": row["k"],
            "codes": row["codes"],
            "probabilities": [round(p, 6) for p in row["probabilities"]],
            "ic": row["ic"],
            "auto": row["auto"],
            "threshold": row["threshold"],
            "model": {"name": row["model_name"], "version": row["model_version"]},
            "latency_ms": round(row["latency_ms"], 3),
            "batch": {"size": row["batch_size"], "index": row["batch_index"]},
        }


def to_segments(table: pa.Table, records_per_segment: int = 10_000) -> Iterator[tuple[str, bytes]]:
    """``(key, body)`` of JSON-lines segments as the API ships them: ``date=D/<segment>.jsonl``,
    one date per segment."""
    buffer: list[bytes] = []
    date = ""  # of the records in buffer
    sequence = 0

    def key() -> str:
        stamp = date.replace("-", "")
        return f"date={date}/{stamp}T000000000000Z-synthetic-000000-{sequence:06d}.jsonl"

    for record in to_records(table):
        record_date = record["ts"][:10]
        if buffer and (record_date != date or len(buffer) >= records_per_segment):
            yield key(), b"".join(buffer)
            buffer, sequence = [], sequence + 1
        date = record_date
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
        buffer.append(line.encode() + b"\n")
    if buffer:
        yield key(), b"".join(buffer)
