"""A campaign's tasks from the prediction log: the window's distinct descriptions, those already
in the gold standard set aside, a sample drawn with `autocode.annotate.design`, and one task per
drawn description with its inputs, the model's top 5 (the pre-annotations), its inclusion
probability and its weight.

Descriptions are de-duplicated on a key (Unicode NFC, case-folded, blanks collapsed): the same
description typed twice is one task, whose frequency counts both. Its inputs, model version and
top 5 are those of its latest prediction in the window.

Descriptions already annotated (in ``gold``) are not drawn again: they form a *certainty*
stratum (``annotated``, π = 1, weight = their frequency, ``annotate`` false), kept in the task
file so that gold rows of the whole window, weighted, estimate the accuracy of all its traffic.
"""

# ruff: noqa: S608 -- the SQL here interpolates no user value; the window's bounds are parameters
from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Sequence, Set
from dataclasses import dataclass
from datetime import UTC

import pandas as pd

from autocode.annotate.design import DEFAULT_BANDS, DesignError, draw
from autocode.monitor.query import Dataset, Filters, Window

TOP = 5  # codes per task: the pre-annotations
ANNOTATED = "annotated"  # the stratum of descriptions already in the gold standard
_BLANKS = re.compile(r"\s+")


def text_key(text: str) -> str:
    """What two descriptions share when they are the same one."""
    return _BLANKS.sub(" ", unicodedata.normalize("NFC", text).casefold()).strip()


def task_id(key: str) -> str:
    """A stable id of a description (the same in every campaign)."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Campaign:
    tasks: pd.DataFrame  # one row per task; `annotate` false for the certainty stratum
    strata: pd.DataFrame  # stratum, units, rows, mean_ic, sample
    rows: int  # predictions in the window
    blank: int  # of which without a text (never sampled)


def window_units(
    dataset: Dataset, window: Window, model_versions: Sequence[str] = ()
) -> tuple[pd.DataFrame, int, int]:
    """The window's distinct descriptions: (units, predictions in the window, of which blank).

    Units: ``key``, ``text``, ``frequency``, ``first_seen``, ``last_seen`` and, of the latest
    prediction, ``categorical``, ``codes``, ``probabilities``, ``ic``, ``auto``,
    ``model_version``, ``prediction_id``; sorted by ``key`` (a deterministic order). A window
    without any prediction is an error (`DesignError`)."""
    filters = Filters(window, tuple(model_versions))
    where, params = filters.where()
    con = dataset.connect(window, use_rollups=False)
    row = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE text IS NULL OR trim(text) = '') "
        f"FROM predictions WHERE {where}",
        params,
    ).fetchone()
    assert row is not None  # an aggregate without GROUP BY has one row
    total, blank = row
    if total == 0:
        con.close()
        raise DesignError(f"empty window: no prediction logged in {window.label()}")
    latest = con.execute(
        f"""SELECT text, categorical, codes, probabilities, ic, auto, model_version,
                   id AS prediction_id, ts,
                   count(*) OVER w AS frequency, min(ts) OVER w AS first_seen
            FROM predictions
            WHERE {where} AND text IS NOT NULL AND trim(text) <> ''
            WINDOW w AS (PARTITION BY text)
            QUALIFY row_number() OVER (PARTITION BY text ORDER BY ts DESC, id DESC) = 1""",
        params,
    ).df()
    con.close()
    latest["key"] = latest["text"].map(text_key)
    # texts differing only in case or blanks: one unit, the latest prediction's fields
    latest = latest.sort_values(["key", "ts", "prediction_id"], ascending=[True, False, False])
    grouped = latest.groupby("key", sort=True)
    units = grouped.first()
    units["frequency"] = grouped["frequency"].sum()
    units["first_seen"] = grouped["first_seen"].min()
    units = units.rename(columns={"ts": "last_seen"}).reset_index()
    return units, int(total), int(blank)


def annotated_keys(
    gold: pd.DataFrame, text_column: str | None = None, name: str = "gold"
) -> set[str]:
    """The keys of the descriptions of a gold table (``text_column``, default ``text`` or else
    ``text_description``)."""
    column = text_column or next((c for c in ("text", "text_description") if c in gold), None)
    if column is None or column not in gold:
        raise DesignError(
            f"{name}: no text column {text_column or 'text or text_description'!r}; "
            f"its columns: {list(gold.columns)}"
        )
    return {text_key(t) for t in gold[column].dropna().astype(str) if t.strip()}


def sample_campaign(
    dataset: Dataset,
    window: Window,
    size: int,
    seed: int = 0,
    *,
    annotated: Set[str] = frozenset(),
    bands: Sequence[float] = DEFAULT_BANDS,
    uncertainty_share: float = 0.5,
    model_versions: Sequence[str] = (),
) -> Campaign:
    """Draw ``size`` descriptions of ``window`` not yet ``annotated`` (keys of `text_key`)."""
    units, total, blank = window_units(dataset, window, model_versions)
    if units.empty:
        raise DesignError(f"no description to annotate in {window.label()}: every text is blank")
    done = units["key"].isin(annotated)
    fresh = units.loc[~done].reset_index(drop=True)
    if size > len(fresh):
        raise DesignError(
            f"a sample of {size} descriptions asked, but {window.label()} has only {len(fresh)} "
            f"distinct descriptions not yet annotated ({int(done.sum())} already are): ask for "
            f"at most {len(fresh)}"
        )
    drawn = draw(fresh, size, seed, bands, uncertainty_share)
    sample = drawn.sample.assign(annotate=True)
    certain = units.loc[done].assign(
        stratum=ANNOTATED,
        inclusion_probability=1.0,
        weight=lambda f: f["frequency"].astype(float),
        annotate=False,
    )
    strata = drawn.strata
    if len(certain):
        strata = pd.concat(
            [
                strata,
                pd.DataFrame(
                    {
                        "stratum": [ANNOTATED],
                        "units": [len(certain)],
                        "rows": [int(certain["frequency"].sum())],
                        "mean_ic": [
                            float((certain["ic"] * certain["frequency"]).sum())
                            / float(certain["frequency"].sum())
                        ],
                        "sample": [len(certain)],
                    }
                ),
            ],
            ignore_index=True,
        )
    tasks = to_tasks(pd.concat([sample, certain], ignore_index=True))
    return Campaign(tasks, strata, total, blank)


def unit_inputs(units: pd.DataFrame, taken: Set[str]) -> dict[str, list[object]]:
    """The logged categorical inputs of ``units`` (window_units), one column each under its own
    name, ``input_<name>`` when the name is ``taken`` by another column or starts with
    ``input_``."""
    inputs = [dict(c) if c is not None else {} for c in units["categorical"]]
    names = sorted({name for row in inputs for name in row})
    return {
        f"input_{name}" if name in taken or name.startswith("input_") else name: [
            row.get(name) for row in inputs
        ]
        for name in names
    }


def to_tasks(units: pd.DataFrame) -> pd.DataFrame:
    """One flat row per task: ``task_id``, ``text``, the categorical inputs under their own
    names (`unit_inputs`), ``code_1..5``, ``proba_1..5`` and the design's columns."""
    units = units.reset_index(drop=True)
    frame = pd.DataFrame({"task_id": units["key"].map(task_id), "text": units["text"]})
    fixed = {"task_id", "text", "frequency", "ic", "auto", "stratum", "weight", "annotate"}
    fixed |= {f"code_{r}" for r in range(1, TOP + 1)} | {f"proba_{r}" for r in range(1, TOP + 1)}
    for column, values in unit_inputs(units, fixed).items():
        frame[column] = values
    for rank in range(TOP):
        frame[f"code_{rank + 1}"] = [c[rank] if len(c) > rank else None for c in units["codes"]]
        frame[f"proba_{rank + 1}"] = [
            float(p[rank]) if len(p) > rank else None for p in units["probabilities"]
        ]
    frame["ic"] = units["ic"].to_numpy()
    frame["auto"] = units["auto"].to_numpy()
    frame["model_version"] = units["model_version"].to_numpy()
    frame["prediction_id"] = units["prediction_id"].to_numpy()
    for column in ("first_seen", "last_seen"):  # logged in UTC, stored without a zone
        frame[column] = pd.to_datetime(units[column]).dt.tz_localize(UTC)
    frame["frequency"] = units["frequency"].to_numpy(dtype="int64")
    frame["stratum"] = units["stratum"].to_numpy()
    frame["inclusion_probability"] = units["inclusion_probability"].to_numpy(dtype=float)
    frame["weight"] = units["weight"].to_numpy(dtype=float)
    frame["annotate"] = units["annotate"].to_numpy(dtype=bool)
    return frame


def design_summary(campaign: Campaign) -> dict:
    """What the CLI prints: counts and the strata, JSON-ready."""
    strata = json.loads(campaign.strata.to_json(orient="records"))
    return {
        "predictions": campaign.rows,
        "blank_texts": campaign.blank,
        "tasks": int(campaign.tasks["annotate"].sum()),
        "already_annotated": int((~campaign.tasks["annotate"]).sum()),
        "traffic_rows_covered": float(campaign.tasks["weight"].sum()),
        "strata": strata,
    }
