"""Preview of tabular objects (Parquet, CSV, JSON): schema and first rows, without loading the
whole object. Parquet is read through pyarrow's S3 filesystem (the footer, then the first
record batch only); CSV and JSON lines from the first ``HEAD_BYTES`` of the object (a range GET).
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs
import pyarrow.parquet as pq
from botocore.client import BaseClient

from datalab.errors import InvalidInput
from datalab.storage.service import S3Credentials

HEAD_BYTES = 256 * 1024
FORMATS = ("parquet", "csv", "json")


def detect_format(key: str, requested: str | None = None) -> str:
    if requested:
        if requested not in FORMATS:
            raise InvalidInput(f"format must be one of {', '.join(FORMATS)}, not {requested!r}")
        return requested
    lowered = key.lower()
    for suffix, name in ((".parquet", "parquet"), (".pq", "parquet"), (".csv", "csv")):
        if lowered.endswith(suffix):
            return name
    if lowered.endswith((".json", ".jsonl", ".ndjson")):
        return "json"
    raise InvalidInput(
        f"cannot tell the format of {key!r} from its name: pass format=parquet, csv or json"
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def _table_preview(table: pa.Table, rows: int) -> dict[str, Any]:
    head = table.slice(0, rows)
    return {
        "schema": [{"name": f.name, "type": str(f.type)} for f in table.schema],
        "rows": [_jsonable(r) for r in head.to_pylist()],
    }


def preview_parquet(
    endpoint_url: str, region: str, credentials: S3Credentials, bucket: str, key: str, rows: int
) -> dict[str, Any]:
    parsed = urlparse(endpoint_url)
    filesystem = pyarrow.fs.S3FileSystem(
        access_key=credentials.access_key_id,
        secret_key=credentials.secret_access_key,
        session_token=credentials.session_token or None,
        region=region,
        scheme=parsed.scheme or "http",
        endpoint_override=parsed.netloc,
        force_virtual_addressing=False,
    )
    try:
        with filesystem.open_input_file(f"{bucket}/{key}") as handle:
            parquet = pq.ParquetFile(handle)
            batch = next(parquet.iter_batches(batch_size=rows), None)
            table = (
                pa.Table.from_batches([batch])
                if batch is not None
                else parquet.schema_arrow.empty_table()
            )
            preview = _table_preview(table, rows)
            preview["total_rows"] = parquet.metadata.num_rows
    except (OSError, pa.ArrowInvalid) as exc:
        raise InvalidInput(f"{bucket}/{key} is not a readable Parquet file: {exc}") from None
    return preview


def _head(client: BaseClient, bucket: str, key: str) -> tuple[bytes, bool]:
    answer = client.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{HEAD_BYTES - 1}")
    data: bytes = answer["Body"].read()
    total = int(answer.get("ContentRange", "/0").rsplit("/", 1)[-1] or 0)
    return data, total > len(data)


def _complete_lines(data: bytes, truncated: bool) -> str:
    text = data.decode("utf-8", errors="replace")
    if truncated and "\n" in text:
        text = text[: text.rindex("\n")]  # drop the line the range cut in two
    return text


def preview_csv(client: BaseClient, bucket: str, key: str, rows: int) -> dict[str, Any]:
    data, truncated = _head(client, bucket, key)
    text = _complete_lines(data, truncated)
    try:
        dialect = csv.Sniffer().sniff(text[:8192], delimiters=",;\t|")
        delimiter = dialect.delimiter
    except csv.Error:
        delimiter = ","
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    try:
        header = next(reader, [])
        records = [
            dict(zip(header, row, strict=False))
            for _, row in zip(range(rows), reader, strict=False)
        ]
    except csv.Error as exc:  # e.g. NUL bytes: a binary file
        raise InvalidInput(
            f"{bucket}/{key} is not a readable CSV file ({exc}); preview reads Parquet, CSV or JSON"
        ) from None
    table = pa.Table.from_pylist(records) if records else pa.table({h: [] for h in header})
    return {**_table_preview(table, rows), "delimiter": delimiter, "truncated": truncated}


def preview_json(client: BaseClient, bucket: str, key: str, rows: int) -> dict[str, Any]:
    data, truncated = _head(client, bucket, key)
    text = data.decode("utf-8", errors="replace").strip()
    records: list[Any]
    if not truncated and text.startswith("["):
        try:
            records = json.loads(text)[:rows]
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{bucket}/{key} is not valid JSON: {exc}") from None
    else:  # JSON lines (or a document too large to parse from its head)
        records = []
        for line in _complete_lines(data, truncated).splitlines():
            if len(records) >= rows:
                break
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    raise InvalidInput(
                        f"{bucket}/{key} is neither a JSON array nor JSON lines"
                    ) from None
    if records and all(isinstance(r, dict) for r in records):
        try:
            table = pa.Table.from_pylist(records)
            return {**_table_preview(table, rows), "truncated": truncated}
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass  # heterogeneous records: shown as they are
    return {"schema": [], "rows": [_jsonable(r) for r in records], "truncated": truncated}
