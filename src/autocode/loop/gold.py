"""The gold standard: the Parquet files written by ``autocode annotate export`` (one or more
files or folders, local or ``s3://``), read into one table of usable rows, and the seeded
hold-out of gold rows that a challenger is not trained on.

A gold row has ``text``, the categorical inputs, ``code``, ``annotator``, ``time``, the
``skipped`` / ``unsure`` flags and the sample design (``weight``, ``stratum``,
``inclusion_probability``). Skipped and unsure rows are left out; rows whose code is not a leaf
code of the nomenclature are left out and reported. Rows are identified by their description's
key (`autocode.annotate.campaign.text_key`, hashed): the double annotations of one description
go together, to training or to the hold-out, never one to each."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autocode import data as datamod
from autocode.annotate.campaign import annotated_keys, task_id, text_key
from autocode.errors import UserError
from autocode.nomenclature import Nomenclature

FLAGS = ("skipped", "unsure")  # rows with either flag true are not gold
DESIGN_COLUMNS = ("weight", "response_weight", "stratum", "inclusion_probability")
KEY = "gold_key"  # the row's description id (hashed text key)
FILE = "gold_file"  # the file the row came from
MANIFEST = "manifest.json"  # a campaign's gold folder: its versions, the latest named


class GoldError(UserError, ValueError):
    """Gold data that cannot be used; the message says which file and why."""


@dataclass
class Gold:
    """Usable gold rows (``text``, ``code``, categorical columns, ``gold_key``, ``gold_file``,
    the design columns when the files have them) and what was left out."""

    rows: pd.DataFrame
    files: list[dict[str, Any]]  # uri, rows, fingerprint
    left_out: dict[str, int] = field(default_factory=dict)  # reason → rows
    invalid: pd.DataFrame = field(default_factory=pd.DataFrame)

    def summary(self) -> str:
        parts = [f"{len(self.rows)} gold rows from {len(self.files)} files"]
        if self.left_out:
            parts.append("left out: " + ", ".join(f"{n} {why}" for why, n in self.left_out.items()))
        return "; ".join(parts)


def gold_files(uris: Sequence[str]) -> list[str]:
    """The Parquet files of ``uris``: files as they are, folders and ``s3://`` prefixes listed
    (recursively, sorted)."""
    if not uris:
        raise GoldError("no gold given: pass --gold with a file or folder of exported annotations")
    files: list[str] = []
    for uri in uris:
        text = str(uri)
        if text.startswith("s3://"):
            files += _s3_files(text)
            continue
        path = Path(text)
        if path.is_dir():
            found = sorted(str(p) for p in path.rglob("*.parquet"))
            if not found:
                raise GoldError(f"{path}: no .parquet file in this folder")
            manifests = {
                str(p.parent): _latest(p.read_bytes(), str(p)) for p in path.rglob(MANIFEST)
            }
            files += _versions(found, manifests)
        elif path.is_file():
            files.append(str(path))
        else:
            raise GoldError(f"gold file or folder not found: {path}")
    return list(dict.fromkeys(files))


def gold_keys(uris: Sequence[str], *, none_yet: bool = False) -> set[str]:
    """The keys (`text_key`) of every description in the gold files of ``uris``, flagged rows
    too (an expert saw them): what a campaign does not draw again and a teacher does not code.
    ``none_yet``: a folder without gold yet (the first campaign) is an empty set."""
    try:
        files = gold_files(uris)
    except GoldError:
        if none_yet:
            return set()
        raise
    keys: set[str] = set()
    for uri in files:
        keys |= annotated_keys(datamod.read_table(uri), None, uri)
    return keys


def _s3_files(uri: str) -> list[str]:
    if uri.lower().endswith((".parquet", ".pq")):
        return [uri]
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    if not bucket:
        raise GoldError(f"{uri!r} is not an s3://bucket/prefix URI")
    try:
        paginator = datamod.s3_client().get_paginator("list_objects_v2")
        listed = [
            item["Key"]
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix)
            for item in page.get("Contents", [])
        ]
    except Exception as exc:  # botocore's errors carry the useful detail in their message
        raise GoldError(f"cannot list {uri}: {exc}") from exc
    keys = [k for k in listed if k.lower().endswith((".parquet", ".pq"))]
    if not keys:
        raise GoldError(f"{uri}: no .parquet object under this prefix")
    manifests = {}
    for key in listed:
        if key.rsplit("/", 1)[-1] == MANIFEST:
            where = f"s3://{bucket}/{key}"
            folder = where.rsplit("/", 1)[0]
            manifests[folder] = _latest(datamod.read_bytes(where), where)
    return _versions([f"s3://{bucket}/{key}" for key in sorted(keys)], manifests)


def _latest(raw: bytes, where: str) -> str | None:
    try:
        latest = json.loads(raw).get("latest")
    except (ValueError, AttributeError):
        raise GoldError(f"{where}: not a gold manifest (JSON with 'latest')") from None
    return str(latest) if latest else None


def _versions(files: list[str], manifests: dict[str, str | None]) -> list[str]:
    """In a folder that has a manifest (`autocode annotate export` writes one: each export of a
    campaign is a new version holding all its annotations so far), only the latest version;
    elsewhere every file."""
    kept = []
    for file in files:
        folder, _, name = file.rpartition("/")
        if folder in manifests and manifests[folder] is not None and name != manifests[folder]:
            continue
        kept.append(file)
    return kept


def _flag(column: pd.Series) -> pd.Series:
    if column.dtype == bool:
        return column
    text = column.astype(str).str.strip().str.lower()
    return text.isin(("true", "1", "yes", "1.0"))


def read_gold(
    uris: Sequence[str],
    nomenclature: Nomenclature,
    categorical: Sequence[str] = (),
    text_column: str = "text",
    code_column: str = "code",
) -> Gold:
    """All usable gold rows of ``uris`` (see the module's doc)."""
    parts: list[pd.DataFrame] = []
    invalid_parts: list[pd.DataFrame] = []
    files: list[dict[str, Any]] = []  # as Gold.files
    left_out: dict[str, int] = {}
    for uri in gold_files(uris):
        table = datamod.read_table(uri)
        missing = [c for c in (text_column, code_column) if c not in table]
        if missing:
            raise GoldError(
                f"{uri}: columns {missing} missing (an `autocode annotate export` file has "
                f"{text_column!r} and {code_column!r}); it has {list(table.columns)}"
            )
        files.append({"uri": uri, "rows": len(table), "fingerprint": datamod.fingerprint(table)})
        keep = pd.Series(True, index=table.index)
        for flag in FLAGS:
            if flag in table:
                flagged = _flag(table[flag]) & keep
                if flagged.any():
                    left_out[flag] = left_out.get(flag, 0) + int(flagged.sum())
                keep &= ~flagged
        table = table[keep]
        absent = [c for c in categorical if c not in table]
        for column in absent:  # an input the annotators never saw: empty, as the API allows
            table = table.assign(**{column: ""})
        labelled = datamod.label_table(
            table, nomenclature, text_column, code_column, categorical, source="gold"
        )
        for reason, count in (
            labelled.invalid.get("reason", pd.Series(dtype=str)).value_counts().items()
        ):
            left_out[str(reason)] = left_out.get(str(reason), 0) + int(count)
        if len(labelled.invalid):
            invalid_parts.append(labelled.invalid.assign(**{FILE: uri}))
        valid = table.drop(index=labelled.invalid.index)
        rows = labelled.rows.drop(columns=[datamod.SOURCE])
        for column in DESIGN_COLUMNS:
            if column in valid:
                rows[column] = valid[column].to_numpy()
        rows[FILE] = uri
        parts.append(rows)
    rows = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    invalid = pd.concat(invalid_parts, ignore_index=True) if invalid_parts else pd.DataFrame()
    gold = Gold(rows, files, left_out, invalid)
    if rows.empty:
        raise GoldError(
            f"no usable gold row in {', '.join(f['uri'] for f in files)}: {gold.summary()}"
        )
    rows[KEY] = [task_id(text_key(t)) for t in rows[datamod.TEXT]]
    return gold


def held_out(keys: Sequence[str], share: float, seed: int) -> np.ndarray:
    """Which rows are held out: a description is held out when the hash of (seed, its key)
    falls below ``share``. The same description stays held out as the gold standard grows
    (successive challengers share their hold-out), whatever the order of the rows."""
    if not 0 <= share < 1:
        raise GoldError(f"hold-out share {share}: a number from 0 to below 1")
    draws = [
        int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big") / 2**64
        for key in keys
    ]
    return np.asarray(draws, dtype=np.float64) < share


def design_weight_column(rows: pd.DataFrame) -> str | None:
    """The column of gold rows' weights (None: none): ``response_weight`` when the export
    adjusted for skipped tasks (their weight spread over their stratum's coded rows), else the
    design ``weight``."""
    for column in ("response_weight", "weight"):
        if column in rows:
            return column
    return None


def design_of(rows: pd.DataFrame):
    """The `SampleDesign` of gold rows that carry weights (None without a weight column,
    `design_weight_column`)."""
    from autocode.evaluate import SampleDesign

    column = design_weight_column(rows)
    if column is None:
        return None
    try:
        return SampleDesign.of(
            pd.to_numeric(rows[column], errors="coerce").to_numpy(dtype=float),
            rows["stratum"].astype(str) if "stratum" in rows else None,
            pd.to_numeric(rows["inclusion_probability"], errors="coerce").to_numpy(dtype=float)
            if "inclusion_probability" in rows
            else None,
        )
    except ValueError as exc:
        raise GoldError(f"gold sample design: {exc}") from None
