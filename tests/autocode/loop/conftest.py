"""Fixtures of the loop tests: gold files as `autocode annotate export` writes them, made from
the expert-coded rows of dev1000 (read in place from ../shared/data/annotations, never copied)
whose codes fall in the test nomenclature's divisions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ..conftest import REPO

DEV1000 = REPO.parent / "shared" / "data" / "annotations" / "labelstudio_dev1000.csv"
#: Divisions of the loop tests' models: 104 dev1000 rows fall in them.
LOOP_CODES = ["10", "56", "47"]


@pytest.fixture(scope="session")
def dev_rows() -> pd.DataFrame:
    if not DEV1000.is_file():
        pytest.fail(f"{DEV1000} not found (the shared data folder beside the repository)")
    table = pd.read_csv(DEV1000, dtype=str, keep_default_na=False)
    return table[table["code"].str[:2].isin(LOOP_CODES)].reset_index(drop=True)


def gold_table(rows: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Rows in the export's layout: text, inputs, code, annotator, time, the flags, a design."""
    rng = np.random.default_rng(seed)
    n = len(rows)
    inclusion = rng.uniform(0.2, 1.0, n).round(3)
    return pd.DataFrame(
        {
            "text": rows["text_description"].to_numpy(),
            "type_": rows["type_"].to_numpy(),
            "code": rows["code"].to_numpy(),
            "annotator": rng.choice(["a1", "a2"], n),
            "time": pd.Timestamp("2026-11-30T10:00:00Z") + pd.to_timedelta(np.arange(n), "min"),
            "skipped": False,
            "unsure": False,
            "weight": (rng.integers(1, 6, n) / inclusion).round(3),
            "stratum": rng.choice(["ic<0.1", "ic 0.1-0.5", "ic>=0.5"], n),
            "inclusion_probability": inclusion,
        }
    )


def write_gold(folder: Path, table: pd.DataFrame, parts: int = 2) -> Path:
    """``table`` written as ``parts`` Parquet files (two campaigns' exports) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for number, chunk in enumerate(np.array_split(np.arange(len(table)), parts)):
        table.iloc[chunk].to_parquet(folder / f"campaign-{number}.parquet", index=False)
    return folder
