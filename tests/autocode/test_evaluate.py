"""Metrics with intervals, the one ranking, and cross-validation over descriptions."""

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest

from autocode.evaluate import (
    bootstrap_coverage,
    evaluate_predictions,
    largest_coverage,
    wilson_interval,
)
from autocode.model import rank


def test_wilson_interval_known_values():
    # 90 right of 100: the textbook Wilson interval
    low, high = wilson_interval(90, 100)
    assert low == pytest.approx(0.8256, abs=1e-4) and high == pytest.approx(0.9448, abs=1e-4)
    low, high = wilson_interval(10, 10)  # all right: the interval still admits errors
    assert high == pytest.approx(1.0) and low == pytest.approx(0.7225, abs=1e-4)
    assert np.isnan(wilson_interval(0, 0)[0])


def test_largest_coverage_ties_are_covered_together():
    ic = np.array([0.9, 0.9, 0.5, 0.5, 0.1])
    correct = np.array([True, False, True, True, False])
    assert largest_coverage(ic, correct, 0.6) == (1.0, 0.1)  # 3 of 5
    assert largest_coverage(ic, correct, 0.75) == (0.8, 0.5)  # 3 of 4 right from 0.5
    assert largest_coverage(ic, correct, 0.9) == (0.0, 1.0)  # the 0.9 tie: 1 of 2 right


def test_largest_coverage_with_a_guard_or_a_lower_bound_is_stricter():
    """``guard``: one more error counted in every covered share; ``bound``: the lower end of
    the Wilson interval of the covered rows' accuracy must reach the target. Each is the
    largest share meeting its own rule (one row more breaks it), and the stricter, the less."""
    ic = np.linspace(1.0, 0.0, 400, endpoint=False)  # distinct, decreasing: row i is the i-th
    correct = np.ones(400, dtype=bool)
    correct[20:200:40] = False  # 5 errors in the first 200 rows
    correct[200::4] = False  # then one in 4
    rules: dict[str, tuple[Callable[[int, int], bool], dict[str, Any]]] = {
        "plain": (lambda right, n: right >= 0.9 * n, {}),
        "guard": (lambda right, n: right >= 0.9 * (n + 1), {"guard": 1}),
        "bound": (lambda right, n: wilson_interval(right, n)[0] >= 0.9, {"bound": True}),
    }
    coverages = {}
    for name, (holds, options) in rules.items():
        coverage, threshold = largest_coverage(ic, correct, 0.90, **options)
        n = round(coverage * 400)
        assert threshold == ic[n - 1] and holds(correct[:n].sum(), n), name
        assert not any(holds(correct[:m].sum(), m) for m in range(n + 1, 401)), name
        coverages[name] = coverage
    assert coverages["plain"] > coverages["guard"] > coverages["bound"] > 0


def test_bootstrap_interval_brackets_the_coverage():
    rng = np.random.default_rng(3)
    ic = rng.random(400)
    correct = rng.random(400) < 0.3 + 0.7 * ic  # higher IC, more often right
    coverage, _ = largest_coverage(ic, correct, 0.9)
    low, high = bootstrap_coverage(ic, correct, 0.9, samples=300)
    assert 0 < low <= coverage <= high < 1
    assert bootstrap_coverage(ic, correct, 0.9, samples=300) == (low, high)  # seeded


def _predictions(naf2008, codes, ic, auto):
    frame = pd.DataFrame({f"code_{r + 1}": [row[r] for row in codes] for r in range(5)})
    frame["proba_1"] = 0.5
    frame["ic"] = ic
    frame["auto"] = auto
    for level in naf2008.levels:
        frame[level] = [naf2008.ancestor_at(c, level) for c in frame["code_1"]]
    return frame


def test_per_level_top5_and_the_auto_decision(naf2008):
    five = ["10.71C", "10.71D", "56.10A", "56.10C", "01.11Z"]
    truth = ["10.71D", "56.10C", "10.71C", "47.11B"]
    codes = [five, five, five, five]
    predictions = _predictions(naf2008, codes, [0.9, 0.8, 0.2, 0.1], [True, True, True, False])
    metrics = evaluate_predictions(predictions, truth, naf2008).metrics
    assert metrics["accuracy"] == 0.25 and metrics["top5_accuracy"] == 0.75
    assert metrics["top5_accuracy_section"] == 0.75  # 47.11B: section G, not among C, I, A
    assert metrics["accuracy_division"] == 0.5  # 10.71D and 10.71C share division 10
    assert metrics["accuracy_low"] < 0.25 < metrics["accuracy_high"]
    # the model's own decision: 3 rows automatic, 1 of them right
    assert metrics["auto_rate"] == 0.75 and metrics["auto_rows"] == 3
    assert metrics["auto_accuracy"] == pytest.approx(1 / 3)
    low, high = wilson_interval(1, 3)
    assert (metrics["auto_accuracy_low"], metrics["auto_accuracy_high"]) == (low, high)


def test_rank_orders_ties_by_class_and_ic_needs_two_codes():
    proba = np.array([[0.2, 0.5, 0.3], [0.4, 0.2, 0.4], [0.0, 0.0, 1.0]])
    ranking = rank(proba, 2)
    assert ranking.indices.tolist() == [[1, 2], [0, 2], [2, 0]]
    np.testing.assert_allclose(ranking.ic, [0.2, 0.0, 1.0])
    one = rank(proba, 1)  # k = 1: IC is still p1 - p2
    assert one.indices.shape == (3, 1)
    np.testing.assert_allclose(one.ic, ranking.ic)
    assert rank(proba, 10).indices.shape == (3, 3)  # k clipped to the classes
    np.testing.assert_array_equal(ranking.auto(0.2), [True, False, True])
    assert rank(np.array([[1.0]]), 3).ic.tolist() == [1.0]  # one class: p2 = 0
    assert rank(np.zeros((0, 4)), 3).indices.shape == (0, 3)


def test_cross_validation_folds_the_descriptions(
    cold_start, small_nomenclature, nomenclatures_dir, tmp_path
):
    """With a labelled dataset, the folds are its rows: every description is predicted once
    per seed by a coder that never saw it, and the cold-start rows are never tested."""
    from autocode.train import TrainConfig, cross_validate, load_inputs

    labelled = cold_start[cold_start["source"] == "label_subclass"].head(30)
    descriptions = pd.DataFrame(
        {"text_description": labelled["text"] + " artisanal", "code": labelled["code"]}
    )
    descriptions.to_csv(tmp_path / "shop.csv", index=False)
    config = TrainConfig.from_dict(
        {
            "nomenclatures_folder": str(nomenclatures_dir),
            "only_codes": ["10", "56"],
            "model": "tfidf",
            "train": [{"uri": str(tmp_path / "shop.csv")}],
        }
    )
    assert len(load_inputs(config).table) > len(descriptions)
    outcome = cross_validate(config, folds=3, seeds=[0, 1])
    assert outcome.rows == "descriptions" and set(outcome.evaluations) == {0, 1}
    for evaluation in outcome.evaluations.values():
        assert evaluation.metrics["n"] == len(descriptions)
        assert sorted(evaluation.predictions["truth"]) == sorted(
            small_nomenclature.normalize(c) for c in descriptions["code"]
        )
    metrics = outcome.metrics()
    assert metrics["seeds"] == 2
    assert metrics["accuracy_seed_min"] <= metrics["accuracy"] <= metrics["accuracy_seed_max"]
    assert metrics["accuracy"] > 0.5  # the cold-start rows teach these codes
