"""Compaction: JSON-lines segments of the prediction log → Parquet partitioned by date.

Input: ``<log>/date=YYYY-MM-DD/<segment>.jsonl`` as the API ships them. Output::

    <out>/date=YYYY-MM-DD/part-<generation>-<run>-<n>.parquet   the rows of the day, few files
    <out>/date=YYYY-MM-DD/rollup-<name>-<generation>-<run>.parquet   its hourly roll-ups
    <out>/date=YYYY-MM-DD/_manifest.json                        which files and segments make it
    <out>/_rejected/date=YYYY-MM-DD/<segment>.jsonl             lines that are not valid records

**The manifest is the commit.** A day's Parquet is exactly the files its manifest lists, and the
manifest names every segment already consumed. A run reads the segments the manifest does not
name yet, merges their rows with the day's current rows (deduplicated by id, sorted by time),
writes the merged rows to *new* files, then replaces the manifest in one atomic write, and only
then deletes the files it superseded. Whatever point a run is killed at, the manifest still
describes a complete, consistent day (the old one or the new one): the next run converges to the
same rows. Files no manifest lists (left by a killed run) are never read, and are deleted once
older than ``orphan_grace_s``. Readers (`autocode.monitor.query`) go through the manifests.

Segments are immutable (the shipper writes one key once). If a consumed segment's size changes
anyway (a truncated copy replaced by the whole one), its rows are replaced by what it holds now
(rows carry their segment). Raw segments are never deleted here.
"""

from __future__ import annotations

import io
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from autocode.monitor import schema
from autocode.monitor.storage import Entry, Store

log = logging.getLogger(__name__)

MANIFEST = "_manifest.json"
REJECTED = "_rejected"
MANIFEST_VERSION = 1


@dataclass
class CompactOptions:
    max_rows_per_file: int = 2_000_000
    row_group_rows: int = 128 * 1024
    max_batch_bytes: int = 256 * 1024 * 1024  # raw JSON-lines merged in one generation
    orphan_grace_s: float = 3600.0
    compression: str = "zstd"


@dataclass
class DayResult:
    date: str
    new_segments: int = 0
    new_rows: int = 0
    duplicates: int = 0
    rejected: int = 0
    rows: int = 0
    files: int = 0
    rebuilt: bool = False


@dataclass
class CompactResult:
    days: list[DayResult] = field(default_factory=list)
    seconds: float = 0.0
    bytes_read: int = 0

    @property
    def new_rows(self) -> int:
        return sum(d.new_rows for d in self.days)

    @property
    def rejected(self) -> int:
        return sum(d.rejected for d in self.days)

    def to_dict(self) -> dict[str, Any]:
        return {
            "days": [d.__dict__ for d in self.days if d.new_segments or d.rebuilt],
            "new_rows": self.new_rows,
            "rejected": self.rejected,
            "seconds": round(self.seconds, 3),
            "records_per_s": round(self.new_rows / self.seconds, 1) if self.seconds else None,
        }


def _date_of(key: str) -> str | None:
    head = key.split("/", 1)[0]
    if head.startswith("date=") and len(head) == 15:
        return head[5:]
    return None


def segments_by_date(source: Store) -> dict[str, list[Entry]]:
    days: dict[str, list[Entry]] = {}
    for entry in source.list():
        date = _date_of(entry.key)
        if date is not None and entry.key.endswith(".jsonl"):
            days.setdefault(date, []).append(entry)
    return days


def read_manifest(store: Store, date: str) -> dict[str, Any] | None:
    try:
        manifest = json.loads(store.read(f"date={date}/{MANIFEST}"))
    except FileNotFoundError:
        return None
    if manifest.get("version") != MANIFEST_VERSION:
        raise ValueError(
            f"{store.join(f'date={date}/{MANIFEST}')}: manifest version "
            f"{manifest.get('version')!r}, this program reads {MANIFEST_VERSION}"
        )
    return manifest


def compact(
    source: Store,
    target: Store,
    options: CompactOptions | None = None,
    *,
    dates: Iterable[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> CompactResult:
    """Bring the Parquet of ``target`` up to date with the segments of ``source``."""
    options = options or CompactOptions()
    started = time.perf_counter()
    result = CompactResult()
    days = segments_by_date(source)
    wanted = set(dates) if dates is not None else None
    for date in sorted(days):
        if wanted is not None and date not in wanted:
            continue
        day = _compact_day(source, target, date, days[date], options, result, progress)
        result.days.append(day)
    result.seconds = time.perf_counter() - started
    return result


def _compact_day(
    source: Store,
    target: Store,
    date: str,
    segments: list[Entry],
    options: CompactOptions,
    result: CompactResult,
    progress: Callable[[str], None] | None,
) -> DayResult:
    day = DayResult(date)
    manifest = read_manifest(target, date)
    consumed: dict[str, Any] = dict(manifest["segments"]) if manifest else {}
    current = {s.key.rsplit("/", 1)[1]: s for s in segments}
    changed = [
        name
        for name, seen in consumed.items()
        if name in current and seen["size"] != current[name].size
    ]
    _remove_orphans(target, date, manifest, options.orphan_grace_s)
    superseded = written_by(manifest)
    if changed:  # their rows are replaced by what the segments hold now
        log.warning("%s: segment(s) %s changed since compacted; reading them again", date, changed)
        for name in changed:
            consumed.pop(name)
        day.rebuilt = True
    replaced = {name.removesuffix(".jsonl") for name in changed}
    pending = sorted((s for n, s in current.items() if n not in consumed), key=lambda s: s.key)
    while pending:
        batch: list[Entry] = []
        size = 0
        while pending and (not batch or size + pending[0].size <= options.max_batch_bytes):
            segment = pending.pop(0)
            batch.append(segment)
            size += segment.size
        manifest = _merge(
            source, target, date, manifest, batch, options, day, result, superseded, replaced
        )
        superseded, replaced = written_by(manifest), set()
        if progress:
            progress(f"{date}: {day.new_rows} new rows, {day.rows} in {day.files} file(s)")
    if manifest is not None:
        day.rows, day.files = manifest["rows"], len(manifest["files"])
    return day


def _merge(
    source: Store,
    target: Store,
    date: str,
    manifest: dict[str, Any] | None,
    batch: list[Entry],
    options: CompactOptions,
    day: DayResult,
    result: CompactResult,
    superseded: list[str],
    replaced: set[str],
) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    segments: dict[str, Any] = dict(manifest["segments"]) if manifest else {}
    rejected_total = manifest.get("rejected", 0) if manifest else 0
    for entry in batch:
        name = entry.key.rsplit("/", 1)[1]
        data = source.read(entry.key)
        result.bytes_read += len(data)
        parsed = schema.parse_segment(data, name.removesuffix(".jsonl"))
        if parsed.rejected:
            _write_rejected(target, date, name, parsed.rejected)
            log.warning(
                "%s: %d line(s) rejected (first: line %d, %s); kept in %s",
                source.join(entry.key),
                len(parsed.rejected),
                parsed.rejected[0].line,
                parsed.rejected[0].reason,
                target.join(f"{REJECTED}/date={date}/{name}"),
            )
        rows.extend(parsed.rows)
        segments[name] = {
            "size": len(data),
            "rows": len(parsed.rows),
            "rejected": len(parsed.rejected),
        }
        rejected_total += len(parsed.rejected)
        day.new_segments += 1
        day.rejected += len(parsed.rejected)
    parts = [schema.to_table(rows)]
    old_files = [f["key"] for f in manifest["files"]] if manifest else []
    for key in old_files:
        part = pq.read_table(io.BytesIO(target.read(key)), schema=schema.SCHEMA)
        if replaced:
            part = part.filter(pc.invert(pc.is_in(part["segment"], pa.array(sorted(replaced)))))
        parts.append(part)
    table = pa.concat_tables(parts[1:] + parts[:1])  # existing rows first: they win on ids
    before = table.num_rows
    table = _deduplicate(table)
    day.duplicates += before - table.num_rows
    day.new_rows += table.num_rows - sum(p.num_rows for p in parts[1:])
    table = table.sort_by([("ts", "ascending"), ("id", "ascending")])
    generation = (manifest["generation"] + 1) if manifest else 1
    return commit_day(
        target, date, table, generation, segments, rejected_total, superseded, options
    )


def commit_day(
    target: Store,
    date: str,
    table: pa.Table,
    generation: int,
    segments: dict[str, Any],
    rejected: int,
    superseded: list[str],
    options: CompactOptions,
) -> dict[str, Any]:
    """Write ``table`` (the whole day, sorted) and its roll-ups as new files, then the manifest
    naming them (the commit), then delete the ``superseded`` files."""
    from autocode.monitor import rollups as rollup_tables

    run = uuid.uuid4().hex[:8]
    rollups = {}
    for name, rolled in rollup_tables.compute(table).items():
        key = f"date={date}/rollup-{name}-{generation:06d}-{run}.parquet"
        buffer = io.BytesIO()
        pq.write_table(
            rolled,
            buffer,
            compression=options.compression,
            row_group_size=rollup_tables.row_group_size(name),
        )
        target.write(key, buffer.getvalue())
        rollups[name] = key
    files = []
    for index, start in enumerate(range(0, max(table.num_rows, 1), options.max_rows_per_file)):
        chunk = table.slice(start, options.max_rows_per_file)
        key = f"date={date}/part-{generation:06d}-{run}-{index:03d}.parquet"
        buffer = io.BytesIO()
        pq.write_table(
            chunk, buffer, compression=options.compression, row_group_size=options.row_group_rows
        )
        target.write(key, buffer.getvalue())
        files.append({"key": key, "rows": chunk.num_rows})
    manifest = {
        "version": MANIFEST_VERSION,
        "date": date,
        "generation": generation,
        "rows": table.num_rows,
        "rejected": rejected,
        "files": files,
        "rollups": rollups,
        "segments": segments,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    target.write(f"date={date}/{MANIFEST}", json.dumps(manifest, indent=1).encode())
    for key in superseded:  # only now: the new manifest no longer names them
        target.delete(key)
    return manifest


def written_by(manifest: dict[str, Any] | None) -> list[str]:
    """The files a manifest names: the day's rows and its roll-ups."""
    if manifest is None:
        return []
    return [f["key"] for f in manifest["files"]] + list(manifest.get("rollups", {}).values())


def _deduplicate(table: pa.Table) -> pa.Table:
    """Keep the first row of each id (a record shipped twice, a day rebuilt)."""
    if table.num_rows == 0:
        return table
    indexed = table.select(["id"]).append_column("__row", pa.array(range(table.num_rows)))
    firsts = indexed.group_by("id", use_threads=False).aggregate([("__row", "min")])
    if firsts.num_rows == table.num_rows:
        return table
    return table.take(pc.sort_indices(firsts["__row_min"]))


def _write_rejected(target: Store, date: str, name: str, rejected: list[schema.Rejected]) -> None:
    lines = []
    for item in rejected:
        try:
            raw: Any = item.raw.decode()
            encoding = "utf-8"
        except UnicodeDecodeError:
            import base64

            raw, encoding = base64.b64encode(item.raw).decode(), "base64"
        lines.append(
            json.dumps(
                {
                    "segment": item.segment,
                    "line": item.line,
                    "reason": item.reason,
                    "raw": raw,
                    "encoding": encoding,
                },
                ensure_ascii=False,
            )
        )
    target.write(f"{REJECTED}/date={date}/{name}", ("\n".join(lines) + "\n").encode())


def _remove_orphans(
    target: Store, date: str, manifest: dict[str, Any] | None, grace_s: float
) -> None:
    """Delete Parquet files of ``date`` that its manifest does not list (a killed run's), once
    they are older than ``grace_s`` (a younger one may belong to a run still going)."""
    listed = set(written_by(manifest))
    now = time.time()
    for entry in target.list(f"date={date}/"):
        orphan = entry.key.endswith(".parquet") and entry.key not in listed
        if orphan and now - entry.modified >= grace_s:
            log.info("removing %s (no manifest lists it)", target.join(entry.key))
            target.delete(entry.key)


def manifests(target: Store) -> dict[str, dict[str, Any]]:
    """The manifest of every compacted day of ``target``."""
    out = {}
    for entry in target.list():
        date = _date_of(entry.key)
        if date is not None and entry.key == f"date={date}/{MANIFEST}":
            manifest = read_manifest(target, date)
            if manifest is not None:
                out[date] = manifest
    return out
