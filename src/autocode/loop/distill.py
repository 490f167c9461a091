"""``autocode distill``: a teacher model codes the distinct descriptions of a window of the
prediction log, for a fast model to be trained on them (a train dataset with ``labels: model``).

The teacher is any autocode model, typically the slow e5 ensemble (fastText + TF-IDF + e5,
~70 texts/s); the student is the fast default model, trained on the notes and these rows
(`autocode train` with them as a ``labels: model`` dataset). Measured on dev1000 at cold
start, a student trained on 800 teacher-coded descriptions gains +0.04 top-1 and comes within
0.01 of its teacher, at the fast model's speed (docs/autocode.md, "Distillation").

A teacher's codes are not experts': they never choose a threshold, so the student codes
nothing automatically, as any cold-start model; and beside experts' codes they are not used
for retraining (measured: no gain, and a teacher trained with the experts' rows leaks their
codes into the calibration; docs/loop.md). The rows keep the teacher's IC. Descriptions
already in the gold standard are left out: the experts' code is better.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence, Set
from dataclasses import dataclass
from datetime import UTC

import numpy as np
import pandas as pd

from autocode.annotate.campaign import unit_inputs, window_units
from autocode.errors import UserError
from autocode.model import Coder
from autocode.monitor.query import Dataset, Window

#: Rows the teacher codes at a time (the progress reported between them).
BATCH = 256


class DistillError(UserError, ValueError):
    """Nothing to distil, or a request that cannot be met; the message says what to change."""


@dataclass(frozen=True)
class Distilled:
    rows: pd.DataFrame  # text, the categorical inputs, code, ic, frequency, first/last_seen
    predictions: int  # predictions in the window
    descriptions: int  # distinct non-blank descriptions among them
    in_gold: int  # of which already in the gold standard (left out)

    def summary(self) -> dict[str, object]:
        rows = self.rows
        return {
            "predictions": self.predictions,
            "descriptions": self.descriptions,
            "already_in_gold": self.in_gold,
            "rows": len(rows),
            "codes": int(rows["code"].nunique()) if len(rows) else 0,
            "mean_teacher_ic": round(float(rows["ic"].mean()), 4) if len(rows) else None,
        }


def distill(
    dataset: Dataset,
    window: Window,
    teacher: Coder,
    *,
    gold_keys: Set[str] = frozenset(),
    size: int | None = None,
    seed: int = 0,
    model_versions: Sequence[str] = (),
    progress: Callable[[int, int], None] | None = None,
) -> Distilled:
    """The distinct descriptions of ``window`` not in ``gold_keys`` (`text_key`), all of them
    or ``size`` drawn at random with ``seed``, coded by ``teacher`` with their logged inputs.
    ``progress(done, total)`` is called after each batch."""
    units, total, _ = window_units(dataset, window, model_versions)
    if units.empty:
        raise DistillError(f"nothing to distil in {window.label()}: every text is blank")
    in_gold = units["key"].isin(gold_keys)
    fresh = units.loc[~in_gold].reset_index(drop=True)
    if fresh.empty:
        raise DistillError(
            f"all {len(units)} descriptions of {window.label()} are already in the gold "
            "standard: nothing left for a teacher to code"
        )
    if size is not None:
        if size < 1:
            raise DistillError(f"--size {size}: ask for at least one description")
        if size < len(fresh):
            drawn = np.random.default_rng(seed).choice(len(fresh), size, replace=False)
            fresh = fresh.iloc[np.sort(drawn)].reset_index(drop=True)
    frame = _inputs(fresh)
    codes, ics = [], []
    for start in range(0, len(frame), BATCH):
        coded = teacher.predict(frame.iloc[start : start + BATCH], k=1)
        codes.extend(coded["code_1"].tolist())
        ics.extend(coded["ic"].tolist())
        if progress is not None:
            progress(min(start + BATCH, len(frame)), len(frame))
    rows = frame.assign(code=codes, ic=np.asarray(ics, dtype=float))
    rows["frequency"] = fresh["frequency"].to_numpy(dtype="int64")
    for column in ("first_seen", "last_seen"):  # logged in UTC, stored without a zone
        rows[column] = pd.to_datetime(fresh[column]).dt.tz_localize(UTC)
    return Distilled(rows, total, len(units), int(in_gold.sum()))


#: The columns of a distilled file besides the inputs (an input of these names is renamed).
COLUMNS = frozenset({"text", "code", "ic", "frequency", "first_seen", "last_seen"})


def _inputs(units: pd.DataFrame) -> pd.DataFrame:
    """``text`` and each logged categorical input under its own name (as the model reads it)."""
    return pd.DataFrame({"text": units["text"].to_numpy(), **unit_inputs(units, COLUMNS)})
