"""The typed table of predictions: one row per record of the prediction log.

A record (docs/autocode-api.md, "The prediction log") becomes one row of `SCHEMA`. Records are
validated field by field: a line that is not JSON, or whose required fields are missing or of the
wrong type, is *rejected* with a reason (and kept aside by the ETL, never dropped silently).
Fields a later model version adds are not lost: top-level keys this schema does not know go to
``extra`` (JSON text), categorical inputs to the ``categorical`` map, whatever their names.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        # UTC, stored without a time zone: DuckDB then reads and filters it with no conversion
        pa.field("ts", pa.timestamp("us"), nullable=False),
        pa.field("route", pa.string()),
        pa.field("client", pa.string()),
        pa.field("model_name", pa.string()),
        pa.field("model_version", pa.string()),
        pa.field("model_alias", pa.string()),
        pa.field("text", pa.string()),
        pa.field("categorical", pa.map_(pa.string(), pa.string())),
        pa.field("k", pa.int16()),
        pa.field("codes", pa.list_(pa.string())),
        pa.field("probabilities", pa.list_(pa.float32())),
        pa.field("code", pa.string()),
        pa.field("probability", pa.float32()),
        pa.field("ic", pa.float64()),
        pa.field("threshold", pa.float64()),
        pa.field("auto", pa.bool_()),
        pa.field("latency_ms", pa.float32()),
        pa.field("batch_size", pa.int32()),
        pa.field("batch_index", pa.int32()),
        pa.field("extra", pa.string()),
        pa.field("segment", pa.string()),
    ]
)
COLUMNS = SCHEMA.names
KNOWN_KEYS = frozenset(
    {
        "id",
        "ts",
        "route",
        "client",
        "input",
        "k",
        "codes",
        "probabilities",
        "ic",
        "auto",
        "threshold",
        "model",
        "latency_ms",
        "batch",
    }
)


class RecordError(ValueError):
    """A record that cannot be a row; the message names the field."""


@dataclass
class Rejected:
    """A line that could not be read, kept with the reason (the ETL writes it aside)."""

    segment: str
    line: int  # 1-based
    reason: str
    raw: bytes


@dataclass
class Parsed:
    rows: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    dates: set[str] = field(default_factory=set)


def _number(record: dict[str, Any], key: str, required: bool = True) -> float | None:
    value = record.get(key)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RecordError(f"{key}: expected a number, got {_show(value)}")
    if not math.isfinite(value):
        raise RecordError(f"{key}: not a finite number ({value})")
    return float(value)


def _string(value: Any, key: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, str | int) and not isinstance(value, bool):
        return str(value)
    raise RecordError(f"{key}: expected a string, got {_show(value)}")


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def parse_timestamp(value: Any) -> datetime:
    if not isinstance(value, str):
        raise RecordError(f"ts: expected an ISO 8601 time, got {_show(value)}")
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise RecordError(f"ts: not an ISO 8601 time: {_show(value)}") from None
    if ts.tzinfo is None:
        raise RecordError(f"ts: no time zone in {_show(value)}")
    return ts.astimezone(UTC)


def to_row(record: Any, segment: str) -> dict[str, Any]:
    """One record of the log as a row of `SCHEMA`; raises `RecordError` naming the field."""
    if not isinstance(record, dict):
        raise RecordError(f"expected a JSON object, got {_show(record)}")
    record_id = record.get("id")
    if not isinstance(record_id, str) or not record_id:
        raise RecordError(f"id: expected a non-empty string, got {_show(record_id)}")
    ts = parse_timestamp(record.get("ts"))
    codes = record.get("codes")
    if not isinstance(codes, list) or not codes or not all(isinstance(c, str) for c in codes):
        raise RecordError(f"codes: expected a non-empty list of codes, got {_show(codes)}")
    probabilities = record.get("probabilities")
    if (
        not isinstance(probabilities, list)
        or len(probabilities) != len(codes)
        or not all(isinstance(p, int | float) and not isinstance(p, bool) for p in probabilities)
    ):
        raise RecordError(
            f"probabilities: expected {len(codes)} numbers (one per code), got "
            f"{_show(probabilities)}"
        )
    auto = record.get("auto")
    if not isinstance(auto, bool):
        raise RecordError(f"auto: expected true or false, got {_show(auto)}")
    model = record.get("model") or {}
    if not isinstance(model, dict):
        raise RecordError(f"model: expected an object, got {_show(model)}")
    item = record.get("input") or {}
    if not isinstance(item, dict):
        raise RecordError(f"input: expected an object, got {_show(item)}")
    text = _string(item.get("text"), "input.text")
    categorical = [
        (str(key), None if value is None else _string(value, f"input.{key}"))
        for key, value in item.items()
        if key != "text"
    ]
    batch = record.get("batch") or {}
    if not isinstance(batch, dict):
        raise RecordError(f"batch: expected an object, got {_show(batch)}")
    k = record.get("k")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int)):
        raise RecordError(f"k: expected an integer, got {_show(k)}")
    extra = {key: value for key, value in record.items() if key not in KNOWN_KEYS}
    return {
        "id": record_id,
        "ts": ts.replace(tzinfo=None),
        "route": _string(record.get("route"), "route"),
        "client": _string(record.get("client"), "client"),
        "model_name": _string(model.get("name"), "model.name"),
        "model_version": _string(model.get("version"), "model.version"),
        "model_alias": _string(model.get("alias"), "model.alias"),
        "text": text,
        "categorical": categorical or None,
        "k": k,
        "codes": codes,
        "probabilities": [float(p) for p in probabilities],
        "code": codes[0],
        "probability": float(probabilities[0]),
        "ic": _number(record, "ic"),
        "threshold": _number(record, "threshold", required=False),
        "auto": auto,
        "latency_ms": _number(record, "latency_ms", required=False),
        "batch_size": _int(batch.get("size"), "batch.size"),
        "batch_index": _int(batch.get("index"), "batch.index"),
        "extra": json.dumps(extra, ensure_ascii=False, sort_keys=True) if extra else None,
        "segment": segment,
    }


def _int(value: Any, key: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise RecordError(f"{key}: expected an integer, got {_show(value)}")
    return value


def parse_segment(data: bytes, segment: str) -> Parsed:
    """Every line of a JSON-lines segment: rows, and the lines rejected with their reason.

    A torn last line (no newline: a truncated upload or copy) is rejected like any other bad
    line; blank lines are ignored."""
    parsed = Parsed()
    lines = data.split(b"\n")
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise RecordError("not UTF-8 text") from None
            try:
                record = json.loads(text)
            except ValueError as exc:
                torn = number == len(lines)  # the last piece has no newline after it
                raise RecordError(
                    "truncated line (no end of line)" if torn else f"not JSON ({exc})"
                ) from None
            row = to_row(record, segment)
        except RecordError as exc:
            parsed.rejected.append(Rejected(segment, number, str(exc), raw))
            continue
        parsed.rows.append(row)
        parsed.dates.add(row["ts"].strftime("%Y-%m-%d"))
    return parsed


def to_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=SCHEMA)
