"""Predicted codes at every level of the nomenclature (section … subclass).

The log holds the finest code (``10.71C``); its ancestors come from the nomenclature when one is
given (labels too), else from the NAF/NACE code pattern (division ``10``, group ``10.7``, class
``10.71``; the section, a letter, needs the nomenclature). Codes the nomenclature does not know
(another model's) are kept under ``?`` rather than dropped.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING

import pandas as pd

from autocode.monitor.query import LEVELS, Filters, MonitorError, code_counts

if TYPE_CHECKING:
    import duckdb

    from autocode.nomenclature import Nomenclature

UNKNOWN = "?"
_NAF = re.compile(r"^(\d{2})\.?(\d)(\d)([A-Z])$")


def ancestors_by_pattern(code: str) -> dict[str, str]:
    match = _NAF.match(code.strip().upper())
    if not match:
        return {level: UNKNOWN for level in LEVELS[:-1]} | {"subclass": code}
    division, group_digit, class_digit, _ = match.groups()
    return {
        "section": UNKNOWN,
        "division": division,
        "group": f"{division}.{group_digit}",
        "class": f"{division}.{group_digit}{class_digit}",
        "subclass": code,
    }


# the levels of each code already looked up, per nomenclature (a dashboard asks for the same
# codes at every page): id -> (the nomenclature, weakly; code -> its row)
_LOOKED_UP: dict[int, tuple[weakref.ref[Nomenclature], dict[str, dict[str, str]]]] = {}


def _ancestors(code: str, nomenclature: Nomenclature | None) -> dict[str, str]:
    if nomenclature is None:
        return ancestors_by_pattern(code)
    held = _LOOKED_UP.get(id(nomenclature))
    if held is None or held[0]() is not nomenclature:
        held = (weakref.ref(nomenclature), {})
        _LOOKED_UP[id(nomenclature)] = held
    known = held[1]
    if code not in known:
        canonical = nomenclature.find(code)
        if canonical is None:
            known[code] = {level: UNKNOWN for level in LEVELS}
        else:
            path = nomenclature.path(canonical)
            known[code] = {level: path.get(level, UNKNOWN) for level in LEVELS}
    return known[code]


def level_table(codes: Iterable[str], nomenclature: Nomenclature | None = None) -> pd.DataFrame:
    """One row per code: its code at each level (columns named after the levels)."""
    rows = [{"code": code, **_ancestors(code, nomenclature)} for code in codes]
    return pd.DataFrame(rows, columns=["code", *LEVELS])


def label_of(code: str, nomenclature: Nomenclature | None) -> str:
    if nomenclature is None or code == UNKNOWN:
        return ""
    found = nomenclature.find(code)
    return nomenclature.label(found) if found else ""


def check_level(level: str) -> str:
    if level not in LEVELS:
        raise MonitorError(f"unknown level {level!r}; levels: {', '.join(LEVELS)}")
    return level


def codes_by_level(
    con: duckdb.DuckDBPyConnection,
    filters: Filters,
    level: str,
    nomenclature: Nomenclature | None = None,
    top: int | None = 20,
    counts: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Predictions per code at ``level`` (most frequent first), share, automatic-coding rate,
    mean IC and label. ``counts``: the window's `code_counts` if already read (one read serves
    every level)."""
    check_level(level)
    if counts is None:
        counts = code_counts(con, filters)
    columns = ["code", "label", "predictions", "share", "auto_rate", "ic_mean"]
    if counts.empty:
        return pd.DataFrame(columns=columns)
    mapping = level_table(counts["code"], nomenclature)
    merged = counts.merge(mapping[["code", level]], on="code")
    sums = ["predictions", "automatic", "decided", "ic_sum", "ic_count"]
    grouped = merged.groupby(level, as_index=False)[sums].sum()
    grouped = grouped.rename(columns={level: "code"})
    grouped["share"] = grouped["predictions"] / grouped["predictions"].sum()
    grouped["auto_rate"] = grouped["automatic"] / grouped["decided"].where(grouped["decided"] > 0)
    grouped["ic_mean"] = grouped["ic_sum"] / grouped["ic_count"].where(grouped["ic_count"] > 0)
    grouped["label"] = [label_of(c, nomenclature) for c in grouped["code"]]
    grouped = grouped.sort_values(["predictions", "code"], ascending=[False, True])
    if top is not None:
        grouped = grouped.head(top)
    return grouped[columns].reset_index(drop=True)


def counts_at_level(
    con: duckdb.DuckDBPyConnection,
    filters: Filters,
    level: str,
    nomenclature: Nomenclature | None = None,
    counts: pd.DataFrame | None = None,
) -> pd.Series:
    """Predictions per code at ``level`` (a Series indexed by code), for the drift tests."""
    table = codes_by_level(con, filters, level, nomenclature, top=None, counts=counts)
    return table.set_index("code")["predictions"].astype("int64")
