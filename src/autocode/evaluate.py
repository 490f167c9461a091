"""Metrics of a coder on labelled rows, and the figures logged with every run.

Metrics: accuracy at each level of the nomenclature, top-k accuracy, the automatic-coding curve
(for each IC threshold: the share of rows coded automatically and the accuracy on that share),
the largest coverage that keeps 0.90 / 0.95 accuracy, the expected calibration error of the top-1
probability, and per-code accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from autocode.nomenclature import Nomenclature

CURVE_THRESHOLDS = np.round(np.linspace(0.0, 0.99, 100), 2)
TARGET_ACCURACIES = (0.90, 0.95)


@dataclass
class Evaluation:
    metrics: dict[str, float]
    curve: pd.DataFrame  # threshold, coverage, accuracy
    per_code: pd.DataFrame  # code, label, n, accuracy
    per_level: dict[str, float] = field(default_factory=dict)
    predictions: pd.DataFrame = field(default_factory=pd.DataFrame)

    def summary(self) -> str:
        keys = ["n", "accuracy", "top3_accuracy", "top5_accuracy", "ece"]
        keys += [f"coverage_at_{int(a * 100)}" for a in TARGET_ACCURACIES]
        keys += [f"accuracy_{lvl}" for lvl in self.per_level]
        return "  ".join(f"{k}={self.metrics[k]:.3f}" for k in keys if k in self.metrics)


def evaluate_predictions(
    predictions: pd.DataFrame, truth: Sequence[str], nomenclature: Nomenclature
) -> Evaluation:
    """Metrics of ``predictions`` (the output of `Coder.predict`) against ``truth`` codes."""
    truth = [nomenclature.normalize(c) for c in truth]
    n = len(truth)
    if n == 0:
        raise ValueError("no rows to evaluate")
    truth_arr = np.asarray(truth)
    top1 = predictions["code_1"].to_numpy()
    correct = top1 == truth_arr
    metrics: dict[str, float] = {"n": float(n), "accuracy": float(correct.mean())}
    k = sum(1 for c in predictions.columns if c.startswith("code_"))
    for j in (3, 5):
        if j <= k:
            hits = np.zeros(n, dtype=bool)
            for rank in range(1, j + 1):
                hits |= predictions[f"code_{rank}"].to_numpy() == truth_arr
            metrics[f"top{j}_accuracy"] = float(hits.mean())
    per_level = {}
    true_levels = {}
    for level in nomenclature.levels:
        true_levels[f"truth_{level}"] = [nomenclature.ancestor_at(c, level) for c in truth]
        hits = predictions[level].to_numpy() == np.asarray(true_levels[f"truth_{level}"])
        per_level[level] = float(hits.mean())
        metrics[f"accuracy_{level}"] = per_level[level]
    ic = predictions["ic"].to_numpy()
    curve = automatic_coding_curve(ic, correct)
    for target in TARGET_ACCURACIES:
        coverage, threshold = largest_coverage(ic, correct, target)
        metrics[f"coverage_at_{int(target * 100)}"] = coverage
        metrics[f"threshold_at_{int(target * 100)}"] = threshold
    metrics["ece"] = expected_calibration_error(predictions["proba_1"].to_numpy(), correct)
    metrics["mean_ic"] = float(ic.mean())
    per_code = (
        pd.DataFrame({"code": truth_arr, "correct": correct})
        .groupby("code")["correct"]
        .agg(n="size", accuracy="mean")
        .reset_index()
    )
    per_code.insert(1, "label", [nomenclature.label(c) for c in per_code["code"]])
    frame = predictions.assign(truth=truth_arr, correct=correct, **true_levels)
    return Evaluation(metrics, curve, per_code, per_level, frame)


def automatic_coding_curve(ic: np.ndarray, correct: np.ndarray) -> pd.DataFrame:
    rows = []
    for threshold in CURVE_THRESHOLDS:
        covered = ic >= threshold
        share = float(covered.mean())
        accuracy = float(correct[covered].mean()) if covered.any() else float("nan")
        rows.append((float(threshold), share, accuracy))
    return pd.DataFrame(rows, columns=["threshold", "coverage", "accuracy"])


def largest_coverage(ic: np.ndarray, correct: np.ndarray, target: float) -> tuple[float, float]:
    """The largest share of rows coded automatically (IC ≥ t) whose accuracy is ≥ ``target``,
    and that threshold t (ties at t are all covered or all not). (0, 1) if none reaches it."""
    best = (0.0, 1.0)
    for threshold in np.unique(ic):
        covered = ic >= threshold
        if correct[covered].mean() >= target and covered.mean() > best[0]:
            best = (float(covered.mean()), float(threshold))
    return best


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 10):
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            error += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
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
    bins = np.linspace(0, 1, 21)
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
