"""Compaction of the log into Parquet: typed rows, idempotent, incremental, bad input kept aside,
and a run killed at any moment converges to the same rows (the real command, killed with
SIGKILL)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from autocode.monitor import etl, query, rollups
from autocode.monitor.storage import LocalStore, S3Store

from .conftest import lines, random_records, record, segment_key

CODES = ["10.71C", "10.71D", "56.10A", "56.10C", "56.30Z", "47.11B"]


def rows_of(target) -> pa.Table:
    """Every row the manifests of ``target`` name (what readers see)."""
    tables = []
    for manifest in etl.manifests(target).values():
        for item in manifest["files"]:
            tables.append(pq.read_table(pa.BufferReader(target.read(item["key"]))))
    return pa.concat_tables(tables) if tables else pa.table({"id": pa.array([], pa.string())})


def write_log(store, records, per_segment: int = 50) -> list[str]:
    keys = []
    by_day: dict[str, list] = {}
    for item in records:
        by_day.setdefault(item["ts"][:10], []).append(item)
    for day, items in sorted(by_day.items()):
        for start in range(0, len(items), per_segment):
            key = segment_key(day)
            store.write(key, lines(items[start : start + per_segment]))
            keys.append(key)
    return keys


def test_compacts_by_day_and_a_rerun_changes_nothing(tmp_path: Path, day0) -> None:
    rng = np.random.default_rng(0)
    records = random_records(600, day0, timedelta(days=3), rng, CODES)
    source, target = LocalStore(tmp_path / "log"), LocalStore(tmp_path / "parquet")
    write_log(source, records)
    result = etl.compact(source, target)
    assert result.new_rows == 600 and result.rejected == 0
    assert [d.date for d in result.days] == ["2026-11-02", "2026-11-03", "2026-11-04"]
    manifests = etl.manifests(target)
    assert all(len(m["files"]) == 1 for m in manifests.values())  # a few files per day: one
    table = rows_of(target)
    assert sorted(table["id"].to_pylist()) == sorted(r["id"] for r in records)
    # rows of a day are that day's, sorted by time
    for day, manifest in manifests.items():
        part = pq.read_table(target.root / manifest["files"][0]["key"])
        stamps = part["ts"].to_pylist()
        assert stamps == sorted(stamps) and {s.date().isoformat() for s in stamps} == {day}
    files = sorted(p.name for p in target.root.rglob("*.parquet"))
    again = etl.compact(source, target)
    assert again.new_rows == 0 and again.days and all(d.new_segments == 0 for d in again.days)
    assert sorted(p.name for p in target.root.rglob("*.parquet")) == files  # untouched


def test_new_segments_are_merged_into_their_day(tmp_path: Path, day0) -> None:
    source, target = LocalStore(tmp_path / "log"), LocalStore(tmp_path / "parquet")
    first = [record(day0 + timedelta(minutes=i)) for i in range(10)]
    write_log(source, first)
    etl.compact(source, target)
    later = [record(day0 + timedelta(hours=5, minutes=i), "56.10A") for i in range(7)]
    write_log(source, later)
    result = etl.compact(source, target)
    assert result.new_rows == 7
    [manifest] = etl.manifests(target).values()
    assert manifest["generation"] == 2 and manifest["rows"] == 17 and len(manifest["files"]) == 1
    on_disk = {p.relative_to(target.root).as_posix() for p in target.root.rglob("*.parquet")}
    assert on_disk == set(etl.written_by(manifest))  # the superseded files are gone
    assert len(on_disk) == 1 + len(rollups.NAMES)  # the rows and the day's roll-ups
    assert rows_of(target).num_rows == 17


def test_corrupt_and_truncated_segments_lose_nothing(tmp_path: Path, day0) -> None:
    """Bad lines are set aside with their reason (nothing lost), the good ones are compacted,
    the run goes on."""
    source, target = LocalStore(tmp_path / "log"), LocalStore(tmp_path / "parquet")
    good = [record(day0 + timedelta(minutes=i)) for i in range(5)]
    truncated_key = segment_key("2026-11-02")
    source.write(truncated_key, lines(good[:3]) + lines(good[3:4])[:25])  # cut mid-line
    garbage_key = segment_key("2026-11-02")
    source.write(garbage_key, os.urandom(300).replace(b"\n", b"") + b"\n" + lines(good[4:]))
    result = etl.compact(source, target)
    assert result.new_rows == 4 and result.rejected == 2
    rejected = [
        json.loads(line)
        for key in (truncated_key, garbage_key)
        for line in target.read(f"_rejected/{key}").splitlines()
    ]
    assert [r["reason"] for r in rejected] == [
        "truncated line (no end of line)",
        "not UTF-8 text",
    ]
    assert rejected[0]["raw"] == lines(good[3:4])[:25].decode()
    assert rejected[1]["encoding"] == "base64"
    [manifest] = etl.manifests(target).values()
    assert manifest["rejected"] == 2 and manifest["rows"] == 4
    # the whole segment arrives later under the same key (a re-upload): its rows are replaced
    source.write(truncated_key, lines(good[:4]))
    again = etl.compact(source, target)
    assert again.days[0].rebuilt
    ids = rows_of(target)["id"].to_pylist()
    assert sorted(ids) == sorted(r["id"] for r in good) and len(ids) == len(set(ids))


def test_a_schema_change_between_model_versions(tmp_path: Path, day0) -> None:
    source, target = LocalStore(tmp_path / "log"), LocalStore(tmp_path / "parquet")
    old = [record(day0 + timedelta(minutes=i), version="3") for i in range(4)]
    new = [
        record(
            day0 + timedelta(hours=1, minutes=i),
            version="4",
            categorical={"nature": "10"},
            explanation={"weights": [0.1]},
        )
        for i in range(4)
    ]
    write_log(source, old + new)
    etl.compact(source, target)
    table = rows_of(target).to_pandas()
    by_version = table.groupby("model_version").size().to_dict()
    assert by_version == {"3": 4, "4": 4}
    assert (
        table.loc[table.model_version == "4", "extra"].map(json.loads).tolist()
        == [{"explanation": {"weights": [0.1]}}] * 4
    )
    assert table.loc[table.model_version == "3", "extra"].isna().all()


def test_files_no_manifest_lists_are_ignored_then_removed(tmp_path: Path, day0) -> None:
    source, target = LocalStore(tmp_path / "log"), LocalStore(tmp_path / "parquet")
    write_log(source, [record(day0)])
    etl.compact(source, target)
    leftover = target.root / "date=2026-11-02" / "part-000009-deadbeef-000.parquet"
    leftover.write_bytes(b"a killed run's half file")
    dataset = query.Dataset(str(target.root))
    assert str(leftover) not in dataset.files()  # readers go through the manifest
    etl.compact(source, target, etl.CompactOptions(orphan_grace_s=3600))
    assert leftover.exists()  # young: it may belong to a run still going
    write_log(source, [record(day0 + timedelta(hours=1))])  # the day has work again
    etl.compact(source, target, etl.CompactOptions(orphan_grace_s=0))
    assert not leftover.exists()


def _compact_process(source: Path, target: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "autocode.cli", "logs", "compact",
        "--source", str(source), "--output", str(target),
        "--max-batch-bytes", "60000", "--orphan-grace", "0", "--json",
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.slow
def test_a_compaction_killed_at_any_moment_converges(tmp_path: Path, day0) -> None:
    """The real command, killed with SIGKILL while it writes files and manifests, again and
    again; the next complete run gives exactly the rows of an uninterrupted run."""
    rng = np.random.default_rng(7)
    records = random_records(6000, day0, timedelta(days=4), rng, CODES)
    log_dir = tmp_path / "log"
    write_log(LocalStore(log_dir), records, per_segment=100)
    target = LocalStore(tmp_path / "parquet")
    consumed_after_kills = []
    for attempt in range(6):
        process = _compact_process(log_dir, target.root)
        deadline = time.monotonic() + 120
        # wait until it is writing (its first file), then kill it a little later
        while not list(target.root.rglob("*.parquet")) and time.monotonic() < deadline:
            assert process.poll() is None, "the compaction ended before it was killed"
            time.sleep(0.02)
        time.sleep(float(rng.uniform(0.05, 1.5)))
        if process.poll() is not None:
            break  # it finished: nothing left to interrupt
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
        consumed = sum(len(m["segments"]) for m in etl.manifests(target).values())
        consumed_after_kills.append(consumed)
        assert rows_of(target).num_rows == sum(m["rows"] for m in etl.manifests(target).values()), (
            f"after kill {attempt}: a manifest names missing or partial files"
        )
    assert consumed_after_kills and consumed_after_kills[0] < 60, (
        "no kill interrupted the work: the test proves nothing"
    )
    finished = _compact_process(log_dir, target.root)
    assert finished.wait(300) == 0
    clean = LocalStore(tmp_path / "clean")
    etl.compact(LocalStore(log_dir), clean)
    got = rows_of(target).sort_by("id")
    expected = rows_of(clean).sort_by("id")
    assert got.num_rows == len(records) == len(set(got["id"].to_pylist()))
    assert got.drop_columns(["segment"]).equals(expected.drop_columns(["segment"]))
    assert got["segment"].equals(expected["segment"])
    listed = {key for m in etl.manifests(target).values() for key in etl.written_by(m)}
    on_disk = {p.relative_to(target.root).as_posix() for p in target.root.rglob("*.parquet")}
    assert on_disk == listed  # the killed runs' leftovers are gone


@pytest.mark.slow
def test_compacts_in_s3(seaweedfs, monkeypatch, tmp_path: Path, day0) -> None:
    for key, value in seaweedfs.items():
        if key != "bucket":
            monkeypatch.setenv(key, value)
    bucket = seaweedfs["bucket"]
    source = S3Store(f"s3://{bucket}/etl-test/predictions")
    target = S3Store(f"s3://{bucket}/etl-test/predictions-parquet")
    rng = np.random.default_rng(1)
    records = random_records(300, day0, timedelta(days=2), rng, CODES)
    write_log(source, records)
    assert etl.compact(source, target).new_rows == 300
    assert etl.compact(source, target).new_rows == 0
    dataset = query.Dataset(target.uri, cache_dir=tmp_path / "cache")
    con = dataset.connect()
    assert con.execute("SELECT count(*), count(DISTINCT id) FROM predictions").fetchone() == (
        300,
        300,
    )
    assert all(Path(p).is_relative_to(tmp_path / "cache") for p in dataset.files())
    assert dataset.prune_cache() == 0


def test_compact_refuses_zero_threads(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from autocode.cli import app

    result = CliRunner().invoke(
        app, ["logs", "compact", "--source", str(tmp_path), "--threads", "0", "--nice", "0"]
    )
    assert result.exit_code == 2
    assert "--threads" in result.output
