"""Records of the log become typed rows; bad lines are rejected with the field at fault."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from autocode.monitor import schema

from .conftest import lines, record

TS = datetime(2026, 11, 2, 12, 30, tzinfo=UTC)


def test_a_record_becomes_a_typed_row() -> None:
    raw = record(TS, "10.71C", 0.4, categorical={"nature": "10", "surface": 2})
    row = schema.to_row(raw, "seg-1")
    assert row["id"] == raw["id"] and row["ts"] == TS.replace(tzinfo=None)  # UTC
    assert (row["code"], row["codes"], row["ic"], row["auto"]) == (
        "10.71C",
        ["10.71C", "56.10A"],
        0.4,
        True,
    )
    assert (row["model_name"], row["model_version"], row["model_alias"]) == (
        "autocode-naf",
        "3",
        None,
    )
    assert row["categorical"] == [("nature", "10"), ("surface", "2")]
    assert (row["batch_size"], row["batch_index"], row["segment"], row["extra"]) == (
        1,
        0,
        "seg-1",
        None,
    )
    table = schema.to_table([row])
    assert table.schema == schema.SCHEMA and table.num_rows == 1


def test_fields_a_later_version_adds_are_kept() -> None:
    """A schema change between model versions: new top-level fields go to ``extra``, new
    categorical inputs to the map, an alias is read; nothing is dropped."""
    raw = record(TS, categorical={"cj": "5710"}, explanation={"top_words": ["pain"]})
    raw["model"]["alias"] = "champion"
    row = schema.to_row(raw, "s")
    assert json.loads(row["extra"]) == {"explanation": {"top_words": ["pain"]}}
    assert row["categorical"] == [("cj", "5710")] and row["model_alias"] == "champion"
    older = record(TS)
    del older["latency_ms"], older["batch"], older["k"]  # an older writer without these
    row = schema.to_row(older, "s")
    assert row["latency_ms"] is None and row["batch_size"] is None and row["k"] is None


def test_bad_lines_are_rejected_with_a_reason() -> None:
    good = record(TS)
    wrong_ic = record(TS, ic=0.2) | {"ic": "high"}
    no_id = {k: v for k, v in record(TS).items() if k != "id"}
    naive = record(TS) | {"ts": "2026-11-02T12:00:00"}
    mismatched = record(TS) | {"probabilities": [0.5]}
    data = (
        lines([good, wrong_ic, no_id, naive, mismatched])
        + b"\xff\xfe not utf-8\n"
        + b"[1, 2]\n"
        + b"\n"
        + json.dumps(good).encode()[:40]  # torn last line: no end of line
    )
    parsed = schema.parse_segment(data, "seg")
    assert [r["id"] for r in parsed.rows] == [good["id"]]
    reasons = {r.line: r.reason for r in parsed.rejected}
    assert reasons == {
        2: 'ic: expected a number, got "high"',
        3: "id: expected a non-empty string, got null",
        4: 'ts: no time zone in "2026-11-02T12:00:00"',
        5: "probabilities: expected 2 numbers (one per code), got [0.5]",
        6: "not UTF-8 text",
        7: "expected a JSON object, got [1, 2]",
        9: "truncated line (no end of line)",
    }
    assert parsed.rejected[-1].raw == json.dumps(good).encode()[:40]
    assert parsed.dates == {"2026-11-02"}
