"""Evaluation of weighted gold rows (an annotation campaign's): the linearised variance against
the textbook formulas it must reduce to, every weighted metric against the same metric on the
rows repeated as many times as their weight says, and ``autocode evaluate`` on a weighted file
with a trained model (unweighted files unchanged)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from autocode.evaluate import (
    SampleDesign,
    evaluate_predictions,
    ratio_estimate,
    wilson_interval,
)

from ..conftest import run
from ..test_cli import FIXTURES


def test_variance_reduces_to_the_textbook_formulas() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(50) < 0.7).astype(float)
    # one stratum, equal weights: the variance of a proportion, p (1 - p) / (n - 1)
    ratio, variance = ratio_estimate(y, np.ones(50), SampleDesign.of(np.full(50, 3.0)))
    assert ratio == pytest.approx(y.mean())
    assert variance == pytest.approx(y.mean() * (1 - y.mean()) / 49)
    # stratified simple random samples of n_h of N_h: Σ (N_h / N)² s_h² / n_h (no fpc)
    sizes, population = np.array([10, 25, 15]), np.array([400, 100, 1000])
    strata = np.repeat(["a", "b", "c"], sizes)
    weights = np.repeat(population / sizes, sizes)
    ratio, variance = ratio_estimate(y, np.ones(50), SampleDesign.of(weights, strata))
    means = np.array([y[strata == s].mean() for s in "abc"])
    spread = np.array([y[strata == s].var(ddof=1) for s in "abc"])
    share = population / population.sum()
    assert ratio == pytest.approx((share * means).sum())
    assert variance == pytest.approx((share**2 * spread / sizes).sum())


def test_rows_taken_with_certainty_add_no_variance() -> None:
    y = np.array([1, 0, 1, 1, 0, 1, 1, 1], dtype=float)
    everything_known = SampleDesign.of(np.arange(1, 9), inclusion=np.ones(8))
    ratio, variance = ratio_estimate(y, np.ones(8), everything_known)
    assert variance == 0.0 and ratio == pytest.approx((y * np.arange(1, 9)).sum() / 36)
    # half known: the same variance as the sampled half alone around the same ratio
    inclusion = np.array([1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5])
    _, mixed = ratio_estimate(y, np.ones(8), SampleDesign.of(np.full(8, 2.0), None, inclusion))
    _, sampled = ratio_estimate(y, np.ones(8), SampleDesign.of(np.full(8, 2.0)))
    assert 0 < mixed < sampled


def test_a_stratum_with_one_sampled_row_is_centred_on_the_overall_mean() -> None:
    """R survey's ``lonely.psu = "adjust"``: the lone row's z deviates from the mean of all."""
    y = np.array([1.0, 0.0, 1.0, 1.0])
    design = SampleDesign.of([2.0, 2.0, 2.0, 6.0], ["a", "a", "a", "b"])
    ratio, variance = ratio_estimate(y, np.ones(4), design)
    assert ratio == pytest.approx(10 / 12)
    z = design.weights * (y - ratio) / 12
    pair = 3 / 2 * ((z[:3] - z[:3].mean()) ** 2).sum()
    assert variance == pytest.approx(pair + (z[3] - z.mean()) ** 2)


@pytest.mark.parametrize(
    ("weights", "inclusion", "message"),
    [
        ([1.0, -2.0], None, "positive"),
        ([1.0, float("nan")], None, "positive"),
        ([1.0, 2.0], [0.5, 1.5], r"in \(0, 1\]"),
    ],
)
def test_bad_designs_are_refused(weights, inclusion, message) -> None:
    with pytest.raises(ValueError, match=message):
        SampleDesign.of(weights, None, inclusion)


def predictions_for(truth: list[str], nomenclature, rng: np.random.Generator) -> pd.DataFrame:
    """Predictions as `Coder.predict` returns them: right more often at high IC."""
    codes = sorted(nomenclature.codes(nomenclature.leaf_level))
    n = len(truth)
    ic = rng.random(n)
    right = rng.random(n) < 0.3 + 0.65 * ic
    ranked = [
        [t if right[i] else codes[(codes.index(t) + 1) % len(codes)]] for i, t in enumerate(truth)
    ]
    for i, row in enumerate(ranked):
        row += [c for c in codes if c not in row][:4]
        if not right[i] and rng.random() < 0.5:  # the truth among the next four
            row[2] = truth[i]
    frame = pd.DataFrame({f"code_{r + 1}": [row[r] for row in ranked] for r in range(5)})
    frame["proba_1"] = np.clip(0.4 + 0.6 * ic, 0, 1)
    frame["ic"] = ic
    frame["auto"] = ic >= 0.5
    for level in nomenclature.levels:
        frame[level] = [nomenclature.ancestor_at(c, level) for c in frame["code_1"]]
    return frame


def test_weighted_metrics_are_those_of_the_rows_repeated(small_nomenclature) -> None:
    """Integer weights: every weighted estimate equals the plain metric on the rows repeated
    that many times (the population the sample stands for); intervals differ (they are the
    sample's)."""
    rng = np.random.default_rng(1)
    leaves = sorted(small_nomenclature.codes(small_nomenclature.leaf_level))
    truth = [leaves[i] for i in rng.integers(0, len(leaves), 120)]
    predictions = predictions_for(truth, small_nomenclature, rng)
    weights = rng.integers(1, 9, 120)
    strata = np.where(predictions["ic"] < 0.3, "low", "high")
    design = SampleDesign.of(weights.astype(float), strata)
    weighted = evaluate_predictions(predictions, truth, small_nomenclature, design)
    repeated = np.repeat(np.arange(120), weights)
    expanded = evaluate_predictions(
        predictions.iloc[repeated].reset_index(drop=True),
        [truth[i] for i in repeated],
        small_nomenclature,
    )
    counts = ("n", "auto_rows")  # rows of the sample, not estimates
    shared = [k for k in expanded.metrics if not k.endswith(("_low", "_high")) and k not in counts]
    assert len(shared) > 15
    for key in shared:
        assert weighted.metrics[key] == pytest.approx(expanded.metrics[key], abs=1e-9), key
    assert weighted.metrics["population"] == weights.sum() and weighted.metrics["n"] == 120
    assert weighted.metrics["auto_rows"] == predictions["auto"].sum()
    curve, plain_curve = weighted.curve, expanded.curve
    assert curve["coverage"].to_numpy() == pytest.approx(plain_curve["coverage"].to_numpy())
    for key in ("accuracy", "auto_rate", "auto_accuracy", "accuracy_section", "coverage_at_90"):
        low, high = weighted.metrics[f"{key}_low"], weighted.metrics[f"{key}_high"]
        assert low <= weighted.metrics[key] <= high, key
        # the sample's 120 rows know less than 4 times as many would: wider than the expansion's
        assert high - low > expanded.metrics[f"{key}_high"] - expanded.metrics[f"{key}_low"], key


def test_without_a_design_nothing_changes(small_nomenclature) -> None:
    rng = np.random.default_rng(2)
    leaves = sorted(small_nomenclature.codes(small_nomenclature.leaf_level))
    truth = [leaves[i] for i in rng.integers(0, len(leaves), 80)]
    predictions = predictions_for(truth, small_nomenclature, rng)
    metrics = evaluate_predictions(predictions, truth, small_nomenclature).metrics
    correct = predictions["code_1"].to_numpy() == np.asarray(truth)
    assert "population" not in metrics
    assert metrics["accuracy"] == correct.mean()
    assert (metrics["accuracy_low"], metrics["accuracy_high"]) == wilson_interval(correct.sum(), 80)
    auto = predictions["auto"].to_numpy()
    assert metrics["auto_accuracy"] == correct[auto].mean()


def test_cli_evaluates_weighted_gold(small_model, tmp_path, monkeypatch, capsys) -> None:
    gold = pd.read_csv(FIXTURES / "labelled_sample.csv", dtype=str)
    gold["weight"] = [40.0, 10.0, 10.0, 25.0, 1.0, 3.0, 5.0][: len(gold)]
    gold["stratum"] = (["low"] * 4 + ["high"] * 3)[: len(gold)]
    gold["inclusion_probability"] = [0.1, 0.2, 0.2, 0.1, 1.0, 0.5, 0.5][: len(gold)]
    weighted = tmp_path / "gold.parquet"
    gold.to_parquet(weighted)
    plain = tmp_path / "plain.csv"
    gold.drop(columns=["weight", "stratum", "inclusion_probability"]).to_csv(plain, index=False)
    model = str(small_model.output)
    code, out, err = run(
        monkeypatch, capsys, "evaluate", "--model", model, "--input", str(weighted),
        "--input", str(plain), "--json",
    )  # fmt: skip
    assert code == 0, err
    results = json.loads(out)
    coder = small_model.coder
    # the fixture's last 3 rows are invalid (unknown code, not a subclass, no text): reported,
    # left out with their weights
    valid = gold.head(4)
    rows = valid.rename(columns={"text_description": "text"})
    predicted = coder.predict(rows, k=5)
    truth = rows["code"].map(coder.nomenclature.normalize)
    correct = (predicted["code_1"] == truth).to_numpy()
    w = valid["weight"].to_numpy()
    assert results["gold"]["population"] == w.sum()
    assert results["gold"]["accuracy"] == pytest.approx((w * correct).sum() / w.sum())
    assert results["gold"]["auto_rate"] == pytest.approx((w * predicted["auto"]).sum() / w.sum())
    assert "population" not in results["plain"]
    assert results["plain"]["accuracy"] == pytest.approx(correct.mean())
    for key in ("accuracy", "accuracy_section", "auto_rate"):
        assert (
            results["gold"][f"{key}_low"] <= results["gold"][key] <= results["gold"][f"{key}_high"]
        )
    # a table: the weighted estimates with their interval column
    code, _, err = run(monkeypatch, capsys, "evaluate", "--model", model, "--input", str(weighted))
    assert code == 0 and "population" in err and "95 % interval" in err, err


@pytest.mark.parametrize(
    ("change", "args", "message"),
    [
        ({"weight": -1.0}, [], "sampling weights must be positive"),
        ({"weight": "beaucoup"}, [], "'weight'"),
        ({"inclusion_probability": 2.0}, [], "inclusion probabilities must be in (0, 1]"),
        ({}, ["--combined"], "--combined cannot pool weighted samples (gold)"),
    ],
)
def test_cli_bad_weights_are_one_line(
    small_model, tmp_path, monkeypatch, capsys, change, args, message
) -> None:
    gold = pd.read_csv(FIXTURES / "labelled_sample.csv", dtype=str)
    gold["weight"], gold["inclusion_probability"] = 2.0, 0.5
    for column, value in change.items():
        gold[column] = gold[column].astype(object)
        gold.loc[1, column] = value
    path = tmp_path / "gold.csv"
    gold.to_csv(path, index=False)
    code, _, err = run(
        monkeypatch, capsys, "evaluate", "--model", str(small_model.output), "--input", str(path),
        *args,
    )  # fmt: skip
    assert code == 2 and message in err and "Traceback" not in err, err
