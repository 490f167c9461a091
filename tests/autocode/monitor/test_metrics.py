"""Metrics, codes by level, alerts and the HTML report on a small compacted log whose every
number is computed independently here (pandas on the records); empty and one-row windows."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from autocode.monitor import alerts, etl, query, report
from autocode.monitor.levels import codes_by_level, level_table
from autocode.monitor.storage import LocalStore

from .conftest import lines, random_records, segment_key

CODES = ["10.71C", "10.71D", "10.13A", "56.10A", "56.10C", "56.30Z", "47.11B", "43.99C"]
DAY = datetime(2026, 11, 2, tzinfo=UTC)


@pytest.fixture(scope="module")
def logged(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """Two days of records (two model versions, latencies), compacted; and the records."""
    rng = np.random.default_rng(3)
    records = random_records(400, DAY, timedelta(days=1), rng, CODES, version="3")
    records += random_records(
        300, DAY + timedelta(days=1), timedelta(days=1), rng, CODES, version="4"
    )
    for index, item in enumerate(records):
        item["latency_ms"] = float(1 + index % 17)
        item["batch"] = {"size": 2, "index": index % 2}
    root = tmp_path_factory.mktemp("metrics")
    source, target = LocalStore(root / "log"), LocalStore(root / "parquet")
    for day in ("2026-11-02", "2026-11-03"):
        day_records = [r for r in records if r["ts"].startswith(day)]
        source.write(segment_key(day), lines(day_records))
    etl.compact(source, target)
    frame = pd.DataFrame(
        {
            "ts": pd.to_datetime([r["ts"] for r in records]).tz_localize(None),
            "code": [r["codes"][0] for r in records],
            "ic": [r["ic"] for r in records],
            "auto": [r["auto"] for r in records],
            "latency_ms": [r["latency_ms"] for r in records],
            "version": [r["model"]["version"] for r in records],
            "batch_index": [r["batch"]["index"] for r in records],
            "text": [r["input"]["text"] for r in records],
        }
    )
    return target.root, frame


def test_summary_volume_and_automation(logged) -> None:
    root, frame = logged
    window = query.Window.parse("2026-11-02..2026-11-04")
    con = query.Dataset(str(root)).connect(window)
    filters = query.Filters(window)
    facts = query.summary(con, filters)
    assert facts["predictions"] == len(frame) == 700
    assert facts["requests"] == int((frame["batch_index"] == 0).sum())
    assert facts["auto_rate"] == pytest.approx(frame["auto"].mean())
    assert facts["ic_mean"] == pytest.approx(frame["ic"].mean())
    assert facts["latency_p99_ms"] == pytest.approx(frame["latency_ms"].quantile(0.99))
    by_day = query.volume(con, filters, "day")
    assert by_day["predictions"].tolist() == [400, 300]
    hourly = query.volume(con, filters, "hour")
    expected = frame.groupby(frame["ts"].dt.floor("h")).size()
    assert hourly.set_index("period")["predictions"].to_dict() == expected.to_dict()
    grid = query.automation_by_threshold(con, filters, [0.0, 0.3, 0.5, 0.9])
    assert grid["auto_rate"].tolist() == pytest.approx(
        [float((frame["ic"] >= t).mean()) for t in (0.0, 0.3, 0.5, 0.9)]
    )
    versions = query.by_model(con, filters).set_index("model_version")
    assert versions["predictions"].to_dict() == {"3": 400, "4": 300}
    only_v4 = query.summary(con, query.Filters(window, ("4",)))
    assert only_v4["predictions"] == 300
    hist = query.ic_histogram(con, filters, bins=10)
    assert (
        hist["predictions"].tolist() == np.histogram(frame["ic"], bins=10, range=(0, 1))[0].tolist()
    )
    latency = query.latency(con, filters, "day")
    assert latency["p50_ms"].tolist() == pytest.approx(
        frame.groupby(frame["ts"].dt.floor("D"))["latency_ms"].quantile(0.5).tolist()
    )
    uncertain = query.uncertain(con, filters, limit=5)
    manual = frame[~frame["auto"]].sort_values("ts", ascending=False).head(5)
    assert uncertain["ic"].tolist() == pytest.approx(manual["ic"].tolist())


def test_codes_by_level_with_and_without_the_nomenclature(logged, naf2008) -> None:
    root, frame = logged
    window = query.Window.parse("2026-11-02..2026-11-04")
    con = query.Dataset(str(root)).connect(window)
    sections = codes_by_level(con, query.Filters(window), "section", naf2008, top=None)
    mapping = level_table(CODES, naf2008).set_index("code")
    expected = frame["code"].map(mapping["section"]).value_counts()
    assert sections.set_index("code")["predictions"].to_dict() == expected.to_dict()
    assert sections.loc[sections.code == "C", "label"].item() == "Industrie manufacturière"
    groups = codes_by_level(con, query.Filters(window), "group", None, top=3)
    expected = frame["code"].str[:4].value_counts()
    assert groups["predictions"].tolist() == expected.head(3).tolist()
    assert len(groups) == 3 and set(groups["code"]) <= set(expected.index)
    nameless = codes_by_level(con, query.Filters(window), "section", None)
    assert nameless["code"].tolist() == ["?"]  # a section needs the nomenclature


def test_an_empty_window_and_a_one_row_window(logged, tmp_path: Path) -> None:
    root, frame = logged
    empty = query.Window.parse("2026-12-01..2026-12-02")
    con = query.Dataset(str(root)).connect(empty)
    facts = query.summary(con, query.Filters(empty))
    assert facts["predictions"] == 0 and facts["auto_rate"] is None
    assert query.volume(con, query.Filters(empty)).empty
    first = frame["ts"].min()
    one = query.Window(
        first.tz_localize(UTC).to_pydatetime(),
        (first + pd.Timedelta(microseconds=1)).tz_localize(UTC).to_pydatetime(),
    )
    con = query.Dataset(str(root)).connect(one)
    assert query.summary(con, query.Filters(one))["predictions"] == 1
    selection = report.Selection(one, empty, "division")
    pages = report.all_pages(con, selection, None)
    drift_page = pages[4]
    assert drift_page.notes == [
        "not tested: the reference window has 0 predictions (fewer than 50); the current window "
        "has 1 prediction (fewer than 50)"
    ]
    # a folder with no compacted day at all
    nothing = query.Dataset(str(tmp_path / "none")).connect(empty)
    assert query.summary(nothing, query.Filters(empty))["predictions"] == 0
    assert report.all_pages(nothing, report.Selection(empty, empty), None)[0].notes == [
        "No predictions in this window."
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2026-11-03..2026-11-01", "empty window: 2026-11-03 00:00 is not before 2026-11-01 00:00"),
        ("yesterday", "window 'yesterday': write START..END (e.g. 2026-11-01..2026-11-08)"),
        (
            "2026-13-01..2026-12-02",
            "'2026-13-01' is not a date or ISO time (2026-11-01, 2026-11-01T06:00)",
        ),
        ("last:7w", "window 'last:7w': write last:7d or last:24h"),
    ],
)
def test_bad_windows_are_explained(text: str, message: str) -> None:
    with pytest.raises(query.MonitorError) as error:
        query.Window.parse(text)
    assert str(error.value) == message


def test_alerts_as_json_and_prometheus(logged, naf2008) -> None:
    root, _ = logged
    dataset = query.Dataset(str(root))
    reference = query.Filters(query.Window.parse("2026-11-02..2026-11-03"))
    current = query.Filters(query.Window.parse("2026-11-03..2026-11-04"))
    con = dataset.connect(query.Window.parse("2026-11-02..2026-11-04"))
    config = alerts.AlertConfig.from_dict(
        {"min_auto_rate": 0.99, "max_latency_p99_ms": 100, "drift_tests": {"levels": ["section"]}}
    )
    result = alerts.evaluate(dataset, con, reference, current, config, naf2008)
    assert result.firing and [a.name for a in result.firing] == ["auto_rate"]
    payload = json.loads(json.dumps(result.to_dict(), default=str))
    assert payload["firing"] == ["auto_rate"] and payload["current"]["predictions"] == 300
    families = {
        f.name: f for f in text_string_to_metric_families(alerts.prometheus_text(result).decode())
    }
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in families.values()
        for s in f.samples
    }
    assert samples[("autocode_monitor_alert", (("name", "auto_rate"),))] == 1
    assert samples[("autocode_monitor_alert", (("name", "latency_p99_ms"),))] == 0
    assert samples[("autocode_monitor_predictions", (("window", "current"),))] == 300
    assert ("autocode_monitor_drift_p_value", (("test", "ks"), ("variable", "ic"))) in samples
    with pytest.raises(ValueError, match=r"unknown alert setting\(s\) \['min_auto'\]"):
        alerts.AlertConfig.from_dict({"min_auto": 1})
    with pytest.raises(ValueError, match="unknown level 'sector'"):
        alerts.AlertConfig.from_dict({"drift_tests": {"levels": ["sector"]}})


def test_the_html_report_is_self_contained(logged, naf2008) -> None:
    root, _ = logged
    selection = report.Selection(
        query.Window.parse("2026-11-03..2026-11-04"),
        query.Window.parse("2026-11-02..2026-11-03"),
        "division",
        0.4,
    )
    con = query.Dataset(str(root)).connect(query.Window.parse("2026-11-02..2026-11-04"))
    text = report.render_html(report.all_pages(con, selection, naf2008), selection, str(root))
    for title in report.PAGES.values():
        assert f"<h2>{title}</h2>" in text
    assert text.count("Plotly.newPlot") >= 8
    # plotly.js is inlined once; nothing is loaded from the network
    assert not re.search(r"<script[^>]+src=", text) and text.count("plotly.js v") == 1
    assert "Industries alimentaires" in text  # a division's label
