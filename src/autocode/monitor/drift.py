"""Drift between a reference window and a current window of predictions.

Two kinds of tests (docs/monitoring.md explains how to read them):

- the **IC distribution**: two-sample Kolmogorov–Smirnov. The statistic D (largest gap between the
  two empirical distribution functions) is computed from the counts of the IC in bins of 0.001
  (the hourly roll-ups': no need to read millions of rows; D is exact for the binned values, and
  within the mass of one 0.001-wide bin of the raw ones); its p-value is scipy's
  (``scipy.stats.kstwo``, the distribution ``ks_2samp`` uses for large samples).
- the **distribution of predicted codes** at a level: chi-squared test of homogeneity
  (``scipy.stats.chi2_contingency``) on codes pooled so that every expected count is at least 5
  (the test's validity condition; rare codes go to one "other" cell), with Cramér's V; and the
  divergences PSI, Hellinger, Jensen–Shannon (``scipy.spatial.distance.jensenshannon``), KL
  (``scipy.stats.entropy``) and Bhattacharyya on the same pooled cells, smoothed with half a count
  per cell (Jeffreys) so that a code absent from one window gives a finite value.

**Decision.** A test flags drift when its p-value is below ``alpha / m`` (Bonferroni over the m
tests run, so that an i.i.d. pair of windows is flagged with probability at most ``alpha``)
*and* its effect size reaches a bound (KS D, PSI): with millions of predictions a p-value is tiny
for differences nobody cares about, and with a few dozen an effect size is large by chance.
Windows with fewer than ``min_predictions`` predictions are not tested (said so, not flagged).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import stats
from scipy.spatial.distance import jensenshannon

from autocode.monitor.levels import check_level, counts_at_level
from autocode.monitor.query import Filters, code_counts
from autocode.monitor.rollups import IC_SCALE

if TYPE_CHECKING:
    import duckdb

    from autocode.nomenclature import Nomenclature

OTHER = "(other)"


@dataclass
class DriftConfig:
    alpha: float = 0.01
    min_predictions: int = 50
    min_ks: float = 0.1  # KS D: largest gap between the two IC distribution functions
    min_psi: float = 0.1  # PSI: 0.1 moderate, 0.25 large shift (the usual rule of thumb)
    min_expected: float = 5.0  # chi-squared validity: pool cells expected below this
    levels: tuple[str, ...] = ("section", "division", "subclass")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DriftConfig:
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(
                f"unknown drift setting(s) {sorted(unknown)}; known: "
                f"{sorted(cls.__dataclass_fields__)}"
            )
        values = dict(raw)
        if "levels" in values:
            values["levels"] = tuple(check_level(level) for level in values["levels"])
        return cls(**values)


@dataclass
class DriftTest:
    test: str  # ks, chi2
    variable: str  # ic, or codes:<level>
    statistic: float | None
    p_value: float | None
    effect_name: str
    effect: float | None
    effect_bound: float
    flagged: bool = False
    note: str = ""
    divergences: dict[str, float] = field(default_factory=dict)
    cells: int = 0


@dataclass
class DriftReport:
    reference: dict[str, Any]
    current: dict[str, Any]
    tests: list[DriftTest]
    alpha: float
    corrected_alpha: float
    drift: bool
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "current": self.current,
            "alpha": self.alpha,
            "corrected_alpha": self.corrected_alpha,
            "drift": self.drift,
            "message": self.message,
            "tests": [asdict(t) for t in self.tests],
        }


# -- the statistics (pure functions) ----------------------------------------------------------
def ks_from_counts(
    values_a: npt.ArrayLike,
    counts_a: npt.ArrayLike,
    values_b: npt.ArrayLike,
    counts_b: npt.ArrayLike,
) -> tuple[float, float]:
    """Two-sample KS statistic D and its two-sided asymptotic p-value, from value counts.

    D is exact (the same as on the raw samples, ties included). The p-value is
    ``kstwo.sf(D, round(n·m / (n + m)))``, what ``scipy.stats.ks_2samp(method="asymp")`` gives."""
    a = pd.Series(np.asarray(counts_a, dtype=float), index=np.asarray(values_a, dtype=float))
    b = pd.Series(np.asarray(counts_b, dtype=float), index=np.asarray(values_b, dtype=float))
    n, m = a.sum(), b.sum()
    if n == 0 or m == 0:
        raise ValueError("a window without values")
    joint = pd.concat([a.groupby(level=0).sum(), b.groupby(level=0).sum()], axis=1).fillna(0)
    joint = joint.sort_index()
    cdf_a = joint.iloc[:, 0].cumsum().to_numpy() / n
    cdf_b = joint.iloc[:, 1].cumsum().to_numpy() / m
    d = float(np.max(np.abs(cdf_a - cdf_b)))
    en = n * m / (n + m)
    p = float(np.clip(stats.kstwo.sf(d, np.round(en)), 0.0, 1.0))
    return d, p


def pool(reference: pd.Series, current: pd.Series, min_expected: float = 5.0) -> pd.DataFrame:
    """A 2-column table (reference, current) of counts per cell, where the codes whose expected
    count is below ``min_expected`` in either window are pooled into one ``(other)`` cell (and
    that cell too, if still too small, into the smallest remaining one)."""
    table = pd.concat([reference.rename("reference"), current.rename("current")], axis=1)
    table = table.fillna(0).astype(float)
    total = table.to_numpy().sum()
    if total == 0:
        return table
    shares = table.sum() / total
    expected = np.outer(table.sum(axis=1), shares)
    small = (expected < min_expected).any(axis=1)
    pooled = table[~small].copy()
    if small.any():
        pooled.loc[OTHER] = table[small].sum()
        if len(pooled) > 1:
            exp_other = pooled.loc[OTHER].sum() * shares
            if (exp_other < min_expected).any():  # still too small: merge into the smallest
                rest = pooled.drop(index=OTHER)
                smallest = rest.sum(axis=1).idxmin()
                pooled.loc[smallest] += pooled.loc[OTHER]
                pooled = pooled.drop(index=OTHER)
    return pooled


def divergences(reference: np.ndarray, current: np.ndarray) -> dict[str, float]:
    """PSI, Hellinger, Jensen–Shannon distance, KL(current‖reference), Bhattacharyya distance
    between two count vectors over the same cells (half a count added to each cell)."""
    p = (np.asarray(reference, dtype=float) + 0.5) / (np.sum(reference) + 0.5 * len(reference))
    q = (np.asarray(current, dtype=float) + 0.5) / (np.sum(current) + 0.5 * len(current))
    coefficient = float(np.sum(np.sqrt(p * q)))
    return {
        "psi": float(np.sum((q - p) * np.log(q / p))),
        "hellinger": math.sqrt(max(0.0, 1.0 - coefficient)),
        "jensen_shannon": float(jensenshannon(p, q, base=2)),
        "kl": float(stats.entropy(q, p)),
        "bhattacharyya": -math.log(coefficient) if coefficient > 0 else math.inf,
    }


def categorical_test(
    reference: pd.Series, current: pd.Series, config: DriftConfig, variable: str
) -> DriftTest:
    table = pool(reference, current, config.min_expected)
    result = DriftTest("chi2", variable, None, None, "psi", None, config.min_psi)
    result.cells = len(table)
    if len(table) < 2:
        result.note = "one category only: nothing to compare"
        return result
    chi2, p, dof, _ = stats.chi2_contingency(table.to_numpy().T, correction=False)
    result.statistic, result.p_value = float(chi2), float(p)
    result.divergences = divergences(table["reference"].to_numpy(), table["current"].to_numpy())
    result.divergences["cramers_v"] = float(
        stats.contingency.association(table.to_numpy().T.astype(np.int64), method="cramer")
    )
    result.effect = result.divergences["psi"]
    result.note = f"{dof} degrees of freedom, {len(table)} cells"
    return result


# -- comparing two windows ------------------------------------------------------------------
def ic_counts(con: duckdb.DuckDBPyConnection, filters: Filters) -> pd.DataFrame:
    """Predictions per IC value to 0.001 (the ``ic`` roll-up's bins)."""
    where, params = filters.where()
    frame = con.execute(
        f"SELECT ic_bin, sum(predictions) AS n FROM ic WHERE {where} GROUP BY 1",  # noqa: S608
        params,
    ).df()
    return pd.DataFrame({"ic": frame["ic_bin"].to_numpy() / IC_SCALE, "n": frame["n"].to_numpy()})


def compare(
    con: duckdb.DuckDBPyConnection,
    reference: Filters,
    current: Filters,
    config: DriftConfig | None = None,
    nomenclature: Nomenclature | None = None,
    counts: tuple[pd.DataFrame, pd.DataFrame] | None = None,
) -> DriftReport:
    """Run the drift tests between two windows (the connection must cover both). ``counts``:
    the two windows' `code_counts` if already read."""
    config = config or DriftConfig()
    ic_ref, ic_cur = ic_counts(con, reference), ic_counts(con, current)
    codes_ref, codes_cur = {}, {}
    if ic_ref["n"].sum() >= config.min_predictions and ic_cur["n"].sum() >= config.min_predictions:
        ref, cur = counts or (code_counts(con, reference), code_counts(con, current))
        for level in config.levels:
            codes_ref[level] = counts_at_level(con, reference, level, nomenclature, ref)
            codes_cur[level] = counts_at_level(con, current, level, nomenclature, cur)
    return compare_counts(
        Sample(reference.window.label(), ic_ref["ic"], ic_ref["n"], codes_ref),
        Sample(current.window.label(), ic_cur["ic"], ic_cur["n"], codes_cur),
        config,
    )


@dataclass
class Sample:
    """What the tests need of a window: the counts of each IC value and of the codes of each
    level."""

    label: str
    ic_values: npt.ArrayLike  # of floats
    ic_counts: npt.ArrayLike  # of ints, one per value
    codes: dict[str, pd.Series]

    @property
    def size(self) -> int:
        return int(np.sum(self.ic_counts))


def compare_counts(reference: Sample, current: Sample, config: DriftConfig) -> DriftReport:
    """The drift tests and the decision (module docstring) on two windows' counts."""
    n_ref, n_cur = reference.size, current.size
    described = (
        {"window": reference.label, "predictions": n_ref},
        {"window": current.label, "predictions": n_cur},
    )
    too_small = [
        f"the {name} window has {n} prediction{'s' if n != 1 else ''} (fewer than "
        f"{config.min_predictions})"
        for name, n in (("reference", n_ref), ("current", n_cur))
        if n < config.min_predictions
    ]
    if too_small:
        message = "not tested: " + "; ".join(too_small)
        return DriftReport(*described, [], config.alpha, config.alpha, False, message)
    tests = []
    d, p = ks_from_counts(
        reference.ic_values, reference.ic_counts, current.ic_values, current.ic_counts
    )
    tests.append(DriftTest("ks", "ic", d, p, "ks_d", d, config.min_ks))
    for level in config.levels:
        tests.append(
            categorical_test(reference.codes[level], current.codes[level], config, f"codes:{level}")
        )
    run = [t for t in tests if t.p_value is not None]
    corrected = config.alpha / max(1, len(run))
    for test in run:
        assert test.p_value is not None and test.effect is not None
        test.flagged = test.p_value < corrected and test.effect >= test.effect_bound
    flagged = [t for t in tests if t.flagged]
    if flagged:
        message = "drift: " + "; ".join(
            f"{t.variable} ({t.test} p={t.p_value:.2g}, {t.effect_name}={t.effect:.3f} ≥ "
            f"{t.effect_bound})"
            for t in flagged
            if t.p_value is not None and t.effect is not None
        )
    else:
        message = f"no drift at alpha {config.alpha} (Bonferroni over {len(run)} tests)"
    return DriftReport(*described, tests, config.alpha, corrected, bool(flagged), message)
