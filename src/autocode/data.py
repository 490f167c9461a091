"""Training data: labelled tables (CSV / Parquet, local or ``s3://``) and the cold-start set
built from a nomenclature's own labels and explanatory notes."""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from autocode.errors import UserError
from autocode.nomenclature import Nomenclature, Note

TEXT = "text"
CODE = "code"
SOURCE = "source"
#: A labelled row's design weight (the rows of traffic it stands for, `DatasetConfig.weight_column`)
WEIGHT = "row_weight"


class DataError(UserError, ValueError):
    """A data file or column that cannot be used; the message says what to fix."""


# -- reading and writing tables -------------------------------------------------------------------
def s3_client(
    *,
    connect_timeout: float = 60,
    read_timeout: float = 60,
    max_attempts: int | None = None,
) -> Any:
    """A boto3 S3 client configured by the standard AWS variables (``AWS_ACCESS_KEY_ID``,
    ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_DEFAULT_REGION``) and the endpoint in
    ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` (or MLflow's ``MLFLOW_S3_ENDPOINT_URL``), with
    path-style addressing and SigV4 (the one S3 client of autocode: callers choose timeouts and
    retries; botocore's defaults otherwise)."""
    import boto3
    from botocore.config import Config

    endpoint = (
        os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
        or os.environ.get("MLFLOW_S3_ENDPOINT_URL")
    )
    retries = {"max_attempts": max_attempts, "mode": "standard"} if max_attempts else None
    return boto3.client(
        "s3",
        endpoint_url=endpoint or None,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries=retries,
        ),
    )


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not bucket or not key:
        raise DataError(f"{uri!r} is not an s3://bucket/key URI")
    return bucket, key


def read_bytes(uri: str | Path) -> bytes:
    text = str(uri)
    if text.startswith("s3://"):
        bucket, key = _split_s3(text)
        try:
            return s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as exc:  # botocore's errors carry the useful detail in their message
            raise DataError(f"cannot read {text}: {exc}") from exc
    path = Path(text)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    return path.read_bytes()


def _format_of(uri: str) -> str:
    lowered = uri.lower()
    if lowered.endswith((".parquet", ".pq")):
        return "parquet"
    if lowered.endswith((".csv", ".csv.gz", ".txt")):
        return "csv"
    raise DataError(f"{uri}: unknown format; use a .csv or .parquet file")


def read_table(uri: str | Path) -> pd.DataFrame:
    """A CSV (all columns as strings) or Parquet file, local or ``s3://``."""
    kind = _format_of(str(uri))
    data = read_bytes(uri)
    if kind == "parquet":
        return pd.read_parquet(io.BytesIO(data))
    compression = "gzip" if str(uri).endswith(".gz") else None
    return pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, compression=compression)


def write_table(table: pd.DataFrame, uri: str | Path) -> None:
    text = str(uri)
    buffer = io.BytesIO()
    if _format_of(text) == "parquet":
        table.to_parquet(buffer, index=False)
    else:
        table.to_csv(buffer, index=False)
    if text.startswith("s3://"):
        bucket, key = _split_s3(text)
        s3_client().put_object(Bucket=bucket, Key=key, Body=buffer.getvalue())
    else:
        Path(text).parent.mkdir(parents=True, exist_ok=True)
        Path(text).write_bytes(buffer.getvalue())


def fingerprint(table: pd.DataFrame) -> str:
    """A stable content hash of a table (for MLflow's dataset digest and reproducibility)."""
    hashed = pd.util.hash_pandas_object(table.reset_index(drop=True), index=False)
    return hashlib.sha256(hashed.to_numpy().tobytes()).hexdigest()[:16]


# -- labelled data --------------------------------------------------------------------------------
@dataclass
class LabelledData:
    """Rows with a valid code (``text``, ``code``, categorical columns, ``source``) and the rows
    whose code is not a leaf code of the nomenclature, with the reason."""

    rows: pd.DataFrame
    invalid: pd.DataFrame = field(default_factory=pd.DataFrame)
    categorical: tuple[str, ...] = ()

    def report(self) -> str:
        lines = [f"{len(self.rows)} valid rows, {len(self.invalid)} invalid"]
        if len(self.invalid):
            counts = self.invalid["reason"].value_counts()
            lines += [f"  {n} × {reason}" for reason, n in counts.items()]
        return "\n".join(lines)


def load_labelled(
    uri: str | Path,
    nomenclature: Nomenclature,
    text_column: str = "text_description",
    code_column: str = "code",
    categorical_columns: Sequence[str] = (),
    source: str = "labelled",
) -> LabelledData:
    """Read a labelled file and validate its codes against the nomenclature's finest level."""
    table = read_table(uri)
    return label_table(table, nomenclature, text_column, code_column, categorical_columns, source)


def label_table(
    table: pd.DataFrame,
    nomenclature: Nomenclature,
    text_column: str = "text_description",
    code_column: str = "code",
    categorical_columns: Sequence[str] = (),
    source: str = "labelled",
) -> LabelledData:
    missing = [c for c in (text_column, code_column, *categorical_columns) if c not in table]
    if missing:
        raise DataError(f"columns {missing} missing; the table has {list(table.columns)}")
    codes = table[code_column].map(nomenclature.find)
    leaf = nomenclature.leaf_level
    levels = codes.map(lambda c: nomenclature.nodes[c].level if isinstance(c, str) else None)
    text = table[text_column].fillna("").astype(str).str.strip()
    reason = pd.Series("", index=table.index)
    reason[codes.isna()] = "unknown code"
    reason[codes.notna() & (levels != leaf)] = f"not a {leaf} code"
    reason[text == ""] = "empty text"
    ok = reason == ""
    rows = pd.DataFrame({TEXT: text[ok], CODE: codes[ok]})
    for column in categorical_columns:
        rows[column] = table.loc[ok, column]
    rows[SOURCE] = source
    invalid = table.loc[~ok].assign(reason=reason[~ok])
    return LabelledData(rows.reset_index(drop=True), invalid, tuple(categorical_columns))


# -- cold start -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ColdStartConfig:
    """What goes into the cold-start set (each option measured by CV on the notes)."""

    leaf_labels: bool = True  # the leaf's own label
    # labels of these ancestor levels as rows of their leaves (off: it lowered both the notes CV
    # and the real-description accuracy, see docs/autocode.md)
    ancestor_labels: tuple[str, ...] = ()
    ancestor_text: bool = True  # leaf label + its ancestors' labels as one row
    note_fields: tuple[str, ...] = ("general_note", "comprend", "comprend_aussi")
    note_levels: tuple[str, ...] = ("subclass", "class")  # notes of these levels, propagated
    max_leaves_per_note: int = 1  # ancestors' notes only when they cover ≤ this many leaves
    exclusions: bool = True  # `ne_comprend_pas` items "(cf. CODE)" → that CODE
    min_phrase_chars: int = 3


_BULLET = re.compile(r"(?:^|\s)[-–•]\s+|\s*•\s*|;\s+|\n+")
_REFERENCE = re.compile(r"\((?:cf\.|voir)\s*([^)]*)\)", re.IGNORECASE)
_CODE_IN_REFERENCE = re.compile(r"\b\d{2}(?:\.\d{1,2}[A-Z]?)?\b|\b[A-Z]\b")


def split_phrases(note: str, min_chars: int = 3) -> list[str]:
    """A note split into its items (bullets ``- ``, ``•``, ``;``, line breaks)."""
    parts = (p.strip(" .,:;") for p in _BULLET.split(note or ""))
    return [p for p in parts if len(p) >= min_chars]


def exclusion_targets(phrase: str, nomenclature: Nomenclature) -> list[str]:
    """Codes an exclusion item points to: the ``(cf. …)`` references that are codes."""
    codes = []
    for reference in _REFERENCE.findall(phrase):
        if re.search(r"\bà\b", reference):  # a range ("46.2 à 46.9"): too vague to use
            continue
        for candidate in _CODE_IN_REFERENCE.findall(reference):
            found = nomenclature.find(candidate)
            if found and found not in codes:
                codes.append(found)
    return codes


#: The sources of cold-start rows besides the labels (``label_<level>``): `build_cold_start`.
COLD_START_SOURCES = frozenset(
    {"ancestor_text", "general_note", "comprend", "comprend_aussi", "ne_comprend_pas"}
)


def is_cold_start_source(source: object) -> bool:
    """True for the ``source`` of a row built from the nomenclature (`build_cold_start`);
    labelled rows have their dataset's name."""
    text = str(source)
    return text.startswith("label_") or text in COLD_START_SOURCES


def build_cold_start(
    nomenclature: Nomenclature,
    notes: Mapping[str, Note] | None = None,
    config: ColdStartConfig | None = None,
) -> pd.DataFrame:
    """Rows (``text``, ``code``, ``source``) built from the nomenclature alone.

    Labels of every level are propagated to the leaves below them; the explanatory notes of a
    leaf (and of an ancestor when it covers few leaves) are split into phrases; an exclusion
    item that points to another code ("… (cf. 13.91Z)") becomes a phrase of that code.
    """
    config = config or ColdStartConfig()
    notes = notes or {}
    rows: list[tuple[str, str, str]] = []
    leaf = nomenclature.leaf_level
    for code in nomenclature.codes(leaf):
        label = nomenclature.label(code)
        ancestors = nomenclature.ancestors(code)
        if config.leaf_labels and label:
            rows.append((label, code, f"label_{leaf}"))
        for ancestor in ancestors:
            node = nomenclature.nodes[ancestor]
            if node.level in config.ancestor_labels and node.label and node.label != label:
                rows.append((node.label, code, f"label_{node.level}"))
        if config.ancestor_text:
            text = " ".join([label] + [nomenclature.nodes[a].label for a in ancestors[:-1]]).strip()
            rows.append((text, code, "ancestor_text"))
    for code, note in notes.items():
        target = nomenclature.find(code)
        if target is None:
            continue
        level = nomenclature.nodes[target].level
        leaves = nomenclature.leaves_under(target)
        if level in config.note_levels and len(leaves) <= max(1, config.max_leaves_per_note):
            for name in config.note_fields:
                for phrase in split_phrases(getattr(note, name), config.min_phrase_chars):
                    rows.extend((_REFERENCE.sub("", phrase).strip(), lf, name) for lf in leaves)
        if config.exclusions:
            for phrase in split_phrases(note.ne_comprend_pas, config.min_phrase_chars):
                for ref in exclusion_targets(phrase, nomenclature):
                    ref_leaves = nomenclature.leaves_under(ref)
                    if len(ref_leaves) <= max(1, config.max_leaves_per_note):
                        text = _REFERENCE.sub("", phrase).strip()
                        rows.extend((text, lf, "ne_comprend_pas") for lf in ref_leaves)
    table = pd.DataFrame(rows, columns=[TEXT, CODE, SOURCE])
    table = table[table[TEXT].str.len() >= config.min_phrase_chars]
    return table.drop_duplicates([TEXT, CODE]).reset_index(drop=True)


def rows_per_code(table: pd.DataFrame, nomenclature: Nomenclature) -> pd.DataFrame:
    """Rows per leaf code (zero included) and per source, sorted by the fewest rows first."""
    counts = pd.crosstab(table[CODE], table[SOURCE]) if len(table) else pd.DataFrame()
    counts = counts.reindex(nomenclature.codes(), fill_value=0)
    counts.insert(0, "rows", counts.sum(axis=1))
    counts.insert(0, "label", [nomenclature.label(c) for c in counts.index])
    counts.index.name = CODE
    return counts.sort_values("rows", kind="stable")


def combine(*tables: pd.DataFrame) -> pd.DataFrame:
    """Training tables stacked (cold start + labelled), with missing categorical columns empty."""
    frames = [t for t in tables if t is not None and len(t)]
    if not frames:
        raise DataError("no training rows")
    return pd.concat(frames, ignore_index=True).fillna("")
