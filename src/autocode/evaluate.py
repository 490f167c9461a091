"""Metrics of a coder on labelled rows, with their confidence intervals, and the figures logged
with every run.

Metrics: top-1 and top-5 accuracy at each level of the nomenclature, the automatic-coding curve
(for each IC threshold: the share of rows coded automatically and the accuracy on that share),
the largest coverage that keeps 0.90 / 0.95 accuracy, the achieved accuracy of the model's own
automatic decision (``auto``), the expected calibration error of the top-1 probability, and
per-code accuracy. Every proportion comes with a 95 % interval (`INTERVAL`): Wilson's for a
share of rows, a bootstrap over rows for the coverage at a target accuracy (a threshold chosen
on the rows themselves). Keys: ``<metric>_low`` and ``<metric>_high``.

Rows drawn by a known design (an annotation campaign's gold rows, each with a weight, a stratum
and an inclusion probability) are evaluated with a `SampleDesign`: Hájek estimates of the
population's shares with linearised variances (no library at hand has survey variances: scipy
and numpy have none, statsmodels is not in the environment and has none either).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from autocode.nomenclature import Nomenclature

CURVE_THRESHOLDS = np.round(np.linspace(0.0, 0.99, 100), 2)
TARGET_ACCURACIES = (0.90, 0.95)
INTERVAL = 0.95  # confidence level of every interval reported
BOOTSTRAP_SAMPLES = 1000
_Z = 1.959963984540054  # the normal quantile of INTERVAL (two-sided)


def wilson_interval(successes: float, n: float, z: float = _Z) -> tuple[float, float]:
    """Wilson's score interval of a proportion (``INTERVAL`` by default); (nan, nan) for n = 0.
    Unlike the normal approximation it stays inside [0, 1] and is sound for small n and for
    proportions near 0 or 1 (the accuracy of automatically coded rows)."""
    if n <= 0:
        return float("nan"), float("nan")
    p = successes / n
    denominator = 1.0 + z * z / n
    centre = p + z * z / (2 * n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return float(max(0.0, (centre - half) / denominator)), float(
        min(1.0, (centre + half) / denominator)
    )


@dataclass(frozen=True)
class SampleDesign:
    """How the evaluated rows were drawn from a larger population (an annotation campaign's gold
    rows): each row's weight (the population rows it stands for: frequency / inclusion
    probability), its stratum, and whether it was taken with certainty (inclusion probability 1:
    no sampling variance). Estimates are then Hájek ratios Σ w·y / Σ w·x and their variance the
    linearised (Taylor) one of a stratified design, with the usual with-replacement
    approximation within strata (conservative when sampling fractions are small; no joint
    inclusion probabilities needed): v = Σ_h n_h / (n_h - 1) Σ_i∈h (z_i - z̄_h)², z_i = w_i
    (y_i - R x_i) / Σ w x. A stratum with one sampled row is centred on the mean of all rows
    (R survey's ``lonely.psu = "adjust"``). Intervals: Wilson's at the effective sample size
    R (1 - R) / v (at most the rows in the domain; all of them when v = 0), as Korn and
    Graubard do with Clopper-Pearson. The cap credits no design effect below 1: strata of 2 or 3
    sampled rows give variances too unstable to narrow an interval on (uncapped, the coverage
    measured on dev1000 fell to 0.79; docs/autocode.md, "Annotation campaigns")."""

    weights: np.ndarray
    strata: np.ndarray
    certain: np.ndarray

    @classmethod
    def of(
        cls,
        weights: npt.ArrayLike,
        strata: npt.ArrayLike | None = None,
        inclusion: npt.ArrayLike | None = None,
    ) -> SampleDesign:
        w = np.asarray(weights, dtype=np.float64)
        if not np.isfinite(w).all() or (w <= 0).any():
            raise ValueError("sampling weights must be positive numbers (a row has none or ≤ 0)")
        labels = np.asarray(["all"] * len(w) if strata is None else strata, dtype=object)
        if inclusion is None:
            certain = np.zeros(len(w), dtype=bool)
        else:
            pi = np.asarray(inclusion, dtype=np.float64)
            if not np.isfinite(pi).all() or (pi <= 0).any() or (pi > 1 + 1e-9).any():
                raise ValueError("inclusion probabilities must be in (0, 1]")
            certain = pi >= 1 - 1e-12
        if not len(labels) == len(w) == len(certain):
            raise ValueError("weights, strata and inclusion probabilities differ in length")
        return cls(w, labels.astype(str), certain)

    def subset(self, rows: np.ndarray) -> SampleDesign:
        return SampleDesign(self.weights[rows], self.strata[rows], self.certain[rows])


def ratio_estimate(y: np.ndarray, x: np.ndarray, design: SampleDesign) -> tuple[float, float]:
    """The Hájek ratio Σ w·y / Σ w·x and its linearised variance (see `SampleDesign`)."""
    y = np.asarray(y, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    w = design.weights
    denominator = float((w * x).sum())
    if denominator <= 0:
        return float("nan"), float("nan")
    ratio = float((w * y).sum()) / denominator
    z = w * (y - ratio * x) / denominator
    sampled = ~design.certain
    z, strata = z[sampled], design.strata[sampled]
    if len(z) == 0:
        return ratio, 0.0
    _, stratum = np.unique(strata, return_inverse=True)
    n_h = np.bincount(stratum).astype(np.float64)
    mean_h = np.bincount(stratum, weights=z) / n_h
    lonely = n_h[stratum] == 1
    centre = np.where(lonely, z.mean(), mean_h[stratum])
    factor = np.where(lonely, 1.0, n_h[stratum] / np.maximum(n_h[stratum] - 1, 1))
    return ratio, float((factor * (z - centre) ** 2).sum())


def _with_design_interval(
    metrics: dict[str, float], name: str, hits: np.ndarray, design: SampleDesign, domain=None
) -> None:
    """``name`` = the weighted share of true ``hits`` (within ``domain`` rows), its interval."""
    x = np.ones(len(hits)) if domain is None else np.asarray(domain, dtype=np.float64)
    y = np.asarray(hits, dtype=np.float64) * x
    ratio, variance = ratio_estimate(y, x, design)
    metrics[name] = ratio
    rows = float((x > 0).sum())
    if np.isnan(ratio) or rows == 0:
        metrics[f"{name}_low"], metrics[f"{name}_high"] = float("nan"), float("nan")
        return
    effective = rows if variance <= 0 else min(rows, ratio * (1 - ratio) / variance)
    metrics[f"{name}_low"], metrics[f"{name}_high"] = wilson_interval(ratio * effective, effective)


@dataclass
class Evaluation:
    metrics: dict[str, float]
    curve: pd.DataFrame  # threshold, rows, coverage, accuracy, accuracy_low, accuracy_high
    per_code: pd.DataFrame  # code, label, n, accuracy
    per_level: dict[str, float] = field(default_factory=dict)
    predictions: pd.DataFrame = field(default_factory=pd.DataFrame)

    def summary(self) -> str:
        keys = ["n", "accuracy", "top3_accuracy", "top5_accuracy", "ece"]
        keys += [f"coverage_at_{int(a * 100)}" for a in TARGET_ACCURACIES]
        keys += ["auto_rate", "auto_accuracy"]
        keys += [f"accuracy_{lvl}" for lvl in self.per_level]
        return "  ".join(f"{k}={self.metrics[k]:.3f}" for k in keys if k in self.metrics)


def _with_interval(
    metrics: dict[str, float], name: str, hits: np.ndarray, design: SampleDesign | None = None
) -> None:
    """``name`` = the share of true ``hits``, and its Wilson interval (with a ``design``: the
    weighted share and its design-based interval)."""
    if design is not None:
        _with_design_interval(metrics, name, hits, design)
        return
    n = len(hits)
    metrics[name] = float(hits.mean()) if n else float("nan")
    metrics[f"{name}_low"], metrics[f"{name}_high"] = wilson_interval(float(hits.sum()), n)


def evaluate_predictions(
    predictions: pd.DataFrame,
    truth: Sequence[str],
    nomenclature: Nomenclature,
    design: SampleDesign | None = None,
) -> Evaluation:
    """Metrics of ``predictions`` (the output of `Coder.predict`) against ``truth`` codes.

    With a ``design`` (rows drawn with known inclusion probabilities, e.g. an annotation
    campaign's): every share is the weighted estimate for the population the rows were drawn
    from, with its design-based interval (`SampleDesign`); ``population`` is Σ weights, the
    curve and the coverages are weighted, and the coverages' intervals come from a bootstrap
    within strata. Per-code accuracy stays a count of the rows."""
    truth = [nomenclature.normalize(c) for c in truth]
    n = len(truth)
    if n == 0:
        raise ValueError("no rows to evaluate")
    if design is not None and len(design.weights) != n:
        raise ValueError(f"{len(design.weights)} sampling weights for {n} rows")
    weights = None if design is None else design.weights
    truth_arr = np.asarray(truth)
    correct = predictions["code_1"].to_numpy() == truth_arr
    metrics: dict[str, float] = {"n": float(n)}
    if design is not None:
        metrics["population"] = float(design.weights.sum())
    _with_interval(metrics, "accuracy", correct, design)
    ranked = [c for c in predictions.columns if c.startswith("code_")]
    for j in (3, 5):
        if j <= len(ranked):
            hits = np.zeros(n, dtype=bool)
            for rank in range(1, j + 1):
                hits |= predictions[f"code_{rank}"].to_numpy() == truth_arr
            _with_interval(metrics, f"top{j}_accuracy", hits, design)
    per_level = {}
    true_levels = {}
    top5 = [predictions[f"code_{r}"].tolist() for r in range(1, min(5, len(ranked)) + 1)]
    for level in nomenclature.levels:
        truth_at = np.asarray([nomenclature.ancestor_at(c, level) for c in truth])
        true_levels[f"truth_{level}"] = truth_at
        hits = predictions[level].to_numpy() == truth_at
        _with_interval(metrics, f"accuracy_{level}", hits, design)
        per_level[level] = metrics[f"accuracy_{level}"]
        if len(top5) == 5:  # the true code's ancestor among those of the 5 best codes
            ancestors = _ancestors_at(nomenclature, top5, level)
            hits5 = (ancestors == truth_at[:, None]).any(axis=1)
            _with_interval(metrics, f"top5_accuracy_{level}", hits5, design)
    ic = predictions["ic"].to_numpy(dtype=np.float64)
    curve = automatic_coding_curve(ic, correct, design)
    for target in TARGET_ACCURACIES:
        name = f"coverage_at_{int(target * 100)}"
        coverage, threshold = largest_coverage(ic, correct, target, weights=weights)
        metrics[name] = coverage
        metrics[f"threshold_at_{int(target * 100)}"] = threshold
        metrics[f"{name}_low"], metrics[f"{name}_high"] = bootstrap_coverage(
            ic, correct, target, design=design
        )
    if "auto" in predictions:  # the model's own decision (its threshold)
        auto = predictions["auto"].to_numpy(dtype=bool)
        _with_interval(metrics, "auto_rate", auto, design)
        metrics["auto_rows"] = float(auto.sum())
        if design is None:
            _with_interval(metrics, "auto_accuracy", correct[auto])
        else:
            _with_design_interval(metrics, "auto_accuracy", correct, design, domain=auto)
    metrics["ece"] = expected_calibration_error(
        predictions["proba_1"].to_numpy(), correct, weights=weights
    )
    metrics["mean_ic"] = float(np.average(ic, weights=weights))
    per_code = (
        pd.DataFrame({"code": truth_arr, "correct": correct})
        .groupby("code")["correct"]
        .agg(n="size", accuracy="mean")
        .reset_index()
    )
    per_code.insert(1, "label", [nomenclature.label(c) for c in per_code["code"]])
    frame = predictions.assign(truth=truth_arr, correct=correct, **true_levels)
    return Evaluation(metrics, curve, per_code, per_level, frame)


def _ancestors_at(nomenclature: Nomenclature, ranked: list[list[str]], level: str) -> np.ndarray:
    """(rows × ranks) the ancestor at ``level`` of each ranked code."""
    cache: dict[str, str] = {}
    out = np.empty((len(ranked[0]), len(ranked)), dtype=object)
    for r, codes in enumerate(ranked):
        for i, code in enumerate(codes):
            if code not in cache:
                cache[code] = nomenclature.ancestor_at(code, level)
            out[i, r] = cache[code]
    return out


def automatic_coding_curve(
    ic: np.ndarray, correct: np.ndarray, design: SampleDesign | None = None
) -> pd.DataFrame:
    """For each threshold of `CURVE_THRESHOLDS`: rows coded automatically (IC ≥ threshold), their
    share, and their accuracy with its Wilson interval (nan when none); with a ``design``, the
    weighted share and accuracy with its design-based interval."""
    rows = []
    for threshold in CURVE_THRESHOLDS:
        covered = ic >= threshold
        count = int(covered.sum())
        if design is not None:
            share = float(design.weights[covered].sum() / design.weights.sum())
            found: dict[str, float] = {}
            _with_design_interval(found, "a", correct, design, domain=covered)
            rows.append(
                (float(threshold), count, share, *(found[k] for k in ("a", "a_low", "a_high")))
            )
            continue
        right = float(correct[covered].sum())
        accuracy = right / count if count else float("nan")
        low, high = wilson_interval(right, count)
        rows.append((float(threshold), count, count / len(ic), accuracy, low, high))
    columns = ["threshold", "rows", "coverage", "accuracy", "accuracy_low", "accuracy_high"]
    return pd.DataFrame(rows, columns=columns)


def largest_coverage(
    ic: np.ndarray,
    correct: np.ndarray,
    target: float,
    guard: int = 0,
    bound: bool = False,
    weights: np.ndarray | None = None,
) -> tuple[float, float]:
    """The largest share of rows coded automatically (IC ≥ t) whose accuracy is ≥ ``target``,
    and that threshold t (ties at t are all covered or all not). (0, 1) if none reaches it.

    ``guard``: count that many more wrong rows in every covered share, i.e. require
    right / (covered + guard) ≥ target. With 1, (wrong + 1) / (covered + 1) ≤ 1 - target: the
    finite-sample correction of conformal risk control: a threshold chosen on held-out rows keeps
    its accuracy on new exchangeable rows in expectation (for the same model; what a refit after
    the choice does: measured on dev1000 in docs/autocode.md, "Automatic coding").
    ``bound``: stricter, require the lower end of the accuracy's Wilson interval (`INTERVAL`)
    to reach ``target`` (``guard`` is then unused): the covered rows are right at least that often
    with 97.5 % confidence.
    ``weights``: rows stand for that many (a sample's weights): shares of the weighted total
    (with ``guard`` and ``bound`` counted in rows as they are)."""
    ic = np.asarray(ic, dtype=np.float64)
    if len(ic) == 0:
        return 0.0, 1.0
    order = np.argsort(-ic, kind="stable")
    sorted_ic = ic[order]
    if weights is not None:
        w = np.asarray(weights, dtype=np.float64)[order]
        covered_w = np.cumsum(w)
        right_w = np.cumsum(w * np.asarray(correct, dtype=np.float64)[order])
        cut = np.r_[sorted_ic[1:] != sorted_ic[:-1], True]
        ok = cut & (right_w >= target * covered_w - 1e-9 * covered_w[-1])
        if not ok.any():
            return 0.0, 1.0
        last = np.flatnonzero(ok)[-1]
        return float(covered_w[last] / covered_w[-1]), float(sorted_ic[last])
    covered = np.arange(1, len(ic) + 1)
    right = np.cumsum(np.asarray(correct, dtype=np.int64)[order])
    # a cut is possible only after the last row of a group of equal ICs
    cut = np.r_[sorted_ic[1:] != sorted_ic[:-1], True]
    if bound:
        z2 = _Z * _Z
        p = right / covered
        centre = p + z2 / (2 * covered)
        half = _Z * np.sqrt(p * (1 - p) / covered + z2 / (4 * covered * covered))
        reached = (centre - half) / (1 + z2 / covered) >= target - 1e-9
    else:
        reached = right >= target * (covered + guard) - 1e-9
    ok = cut & reached
    if not ok.any():
        return 0.0, 1.0
    last = np.flatnonzero(ok)[-1]
    return float(covered[last] / len(ic)), float(sorted_ic[last])


def bootstrap_coverage(
    ic: np.ndarray,
    correct: np.ndarray,
    target: float,
    samples: int = BOOTSTRAP_SAMPLES,
    design: SampleDesign | None = None,
) -> tuple[float, float]:
    """The percentile bootstrap interval (``INTERVAL``) of `largest_coverage` over rows drawn
    with replacement (seeded: the same rows give the same interval). With a ``design``: rows
    redrawn within each stratum (as many as it has; rows taken with certainty always kept), the
    coverage weighted."""
    n = len(ic)
    if n == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(0)
    values = np.empty(samples)
    if design is not None:
        kept = np.flatnonzero(design.certain)
        groups = [
            np.flatnonzero(~design.certain & (design.strata == s))
            for s in np.unique(design.strata[~design.certain])
        ]
    for b in range(samples):
        if design is None:
            rows = rng.integers(0, n, n)
            values[b] = largest_coverage(ic[rows], correct[rows], target)[0]
            continue
        rows = np.concatenate([kept, *(rng.choice(g, len(g)) for g in groups)])
        values[b] = largest_coverage(ic[rows], correct[rows], target, weights=design.weights[rows])[
            0
        ]
    tail = (1 - INTERVAL) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, bins: int = 10, weights: np.ndarray | None = None
):
    w = np.ones(len(confidence)) if weights is None else np.asarray(weights, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            gap = np.average(correct[mask], weights=w[mask]) - np.average(
                confidence[mask], weights=w[mask]
            )
            error += w[mask].sum() / w.sum() * abs(gap)
    return float(error)


# -- figures --------------------------------------------------------------------------------------
def write_figures(evaluation: Evaluation, directory: str | Path, title: str = "") -> list[Path]:
    """PNG figures: automatic-coding curve, IC histogram, per-section accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []

    fig, ax = plt.subplots(figsize=(6, 4))
    curve = evaluation.curve
    ax.plot(curve["threshold"], curve["coverage"], label="coverage (auto-coded share)")
    ax.plot(curve["threshold"], curve["accuracy"], label="accuracy of the auto-coded share")
    for target in TARGET_ACCURACIES:
        ax.axhline(target, color="grey", linewidth=0.5, linestyle="--")
    ax.set_xlabel("IC threshold (p1 - p2)")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"Automatic coding {title}".strip())
    ax.legend(loc="lower left")
    paths.append(_save(fig, directory / "automatic_coding_curve.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    frame = evaluation.predictions
    bins = np.linspace(0, 1, 21).tolist()
    ax.hist(frame.loc[frame["correct"], "ic"], bins=bins, alpha=0.7, label="correct")
    ax.hist(frame.loc[~frame["correct"], "ic"], bins=bins, alpha=0.7, label="wrong")
    ax.set_xlabel("IC (p1 - p2)")
    ax.set_ylabel("rows")
    ax.set_title(f"Confidence index {title}".strip())
    ax.legend()
    paths.append(_save(fig, directory / "ic_histogram.png"))

    top_level = next(iter(evaluation.per_level))  # the broadest level
    accuracy = frame.groupby(f"truth_{top_level}")["correct"].agg(["mean", "size"])
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(accuracy.index.astype(str), accuracy["mean"])
    for x, (_, row) in enumerate(accuracy.iterrows()):
        ax.text(x, row["mean"] + 0.01, str(int(row["size"])), ha="center", fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel(f"{top_level} of the true code (bar labels: rows)")
    ax.set_ylabel("top-1 accuracy")
    ax.set_title(f"Accuracy per {top_level} {title}".strip())
    paths.append(_save(fig, directory / f"accuracy_per_{top_level}.png"))
    return paths


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
