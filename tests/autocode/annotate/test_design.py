"""The campaign's design: exact inclusion probabilities, fixed sample sizes, the allocation, and
— by simulation over many seeds — weighted estimates of a known population accuracy that are
unbiased and whose design-based intervals cover it (where the unweighted share does not)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from autocode.annotate.design import DesignError, allocate, draw, pps_systematic
from autocode.evaluate import INTERVAL, SampleDesign, _with_design_interval


def population(units: int, seed: int) -> pd.DataFrame:
    """Distinct descriptions with skewed frequencies; the model is right more often at high IC
    (so over-sampling low ICs biases an unweighted accuracy downwards)."""
    rng = np.random.default_rng(seed)
    ic = rng.beta(1.2, 2.0, units)
    return pd.DataFrame(
        {
            "key": [f"texte {i}" for i in range(units)],
            "frequency": rng.geometric(0.25, units),  # 1, 2, ... a few frequent ones
            "ic": ic,
            "correct": rng.random(units) < 0.25 + 0.7 * ic,
        }
    )


def test_systematic_pps_probabilities_are_exact() -> None:
    """Over many draws, each unit is drawn as often as its π says (a binomial check on every
    unit), always exactly n units, and the frequent ones with certainty."""
    frequencies = np.array([1, 1, 2, 3, 5, 8, 1, 2, 40, 1, 4, 2])
    n, draws = 5, 6000
    counts = np.zeros(len(frequencies))
    probability = None
    for seed in range(draws):
        chosen, probability = pps_systematic(frequencies, n, np.random.default_rng(seed))
        assert len(chosen) == n == len(set(chosen.tolist()))
        counts[chosen] += 1
    assert probability is not None
    # 5 · 40 ≥ 70: certain; then 4 · 8 ≥ 30 among the rest: certain too; 3 shared by the rest
    assert probability[8] == probability[5] == 1.0
    rest = ~np.isin(np.arange(len(frequencies)), [5, 8])
    assert probability[rest] == pytest.approx(3 * frequencies[rest] / frequencies[rest].sum())
    assert probability.sum() == pytest.approx(n)
    expected = draws * probability
    spread = np.sqrt(np.maximum(expected * (1 - probability), 1e-9))
    assert np.all(np.abs(counts - expected) / spread < 4.5), (counts, expected)


def test_draw_inclusion_frequencies_match_the_design() -> None:
    """The whole design (strata, allocation, PPS): each unit's drawing frequency over seeds
    matches the π the sample reports for it, and the weights of each draw add up to the
    traffic exactly."""
    units = population(60, seed=1)
    position = {key: i for i, key in enumerate(units["key"])}
    draws = 1500
    counts = np.zeros(len(units))
    reported = np.full(len(units), np.nan)
    for seed in range(draws):
        sample = draw(units, 15, seed).sample
        assert len(sample) == 15 and sample["key"].is_unique
        assert sample["weight"].sum() == pytest.approx(units["frequency"].sum())
        where = np.array([position[key] for key in sample["key"]])
        counts[where] += 1
        known = reported[where]
        pi = sample["inclusion_probability"].to_numpy()
        assert np.allclose(known[~np.isnan(known)], pi[~np.isnan(known)])
        reported[where] = pi
    # every unit drawn at least once (none has π < 1 / 500), each as often as its π says
    assert not np.isnan(reported).any()
    expected = draws * reported
    spread = np.sqrt(np.maximum(expected * (1 - reported), 1e-9))
    assert np.all(np.abs(counts - expected) / spread < 4.5)


def _estimate(sample: pd.DataFrame) -> tuple[float, float, float]:
    metrics: dict[str, float] = {}
    design = SampleDesign.of(sample["weight"], sample["stratum"], sample["inclusion_probability"])
    _with_design_interval(metrics, "accuracy", sample["correct"].to_numpy(), design)
    return metrics["accuracy"], metrics["accuracy_low"], metrics["accuracy_high"]


@pytest.mark.parametrize("share", [0.5, 1.0])
def test_weighted_accuracy_is_unbiased_and_its_interval_covers(share: float) -> None:
    units = population(400, seed=2)
    truth = float(np.average(units["correct"], weights=units["frequency"]))
    seeds = 400
    estimates, unweighted, covered = [], [], 0
    for seed in range(seeds):
        sample = draw(units, 80, seed, uncertainty_share=share).sample
        estimate, low, high = _estimate(sample)
        estimates.append(estimate)
        unweighted.append(sample["correct"].mean())
        covered += low <= truth <= high
    error = np.std(estimates) / np.sqrt(seeds)  # Monte Carlo standard error of the mean
    assert abs(np.mean(estimates) - truth) < 3 * error, (np.mean(estimates), truth)
    assert INTERVAL - 0.05 <= covered / seeds <= 0.995, covered / seeds
    # the low ICs over-sampled: the plain share of right answers is biased downwards
    assert truth - np.mean(unweighted) > 5 * np.std(unweighted) / np.sqrt(seeds)


def test_allocation_follows_traffic_then_uncertainty() -> None:
    rows = np.array([100, 100, 100, 100])
    units = np.array([50, 50, 50, 3])
    mean_ic = np.array([0.05, 0.3, 0.6, 0.9])
    proportional = allocate(rows, np.array([50] * 4), mean_ic, 40, uncertainty_share=0.0)
    assert proportional.tolist() == [10, 10, 10, 10]
    uncertain = allocate(rows, units, mean_ic, 40, uncertainty_share=1.0)
    assert uncertain.sum() == 40 and uncertain[3] == 2  # the floor of 2 per stratum
    assert uncertain[0] > uncertain[1] > uncertain[2] > uncertain[3]
    capped = allocate(rows, units, np.array([0.9, 0.9, 0.9, 0.0]), 40, uncertainty_share=1.0)
    assert capped[3] == 3 and capped.sum() == 40  # never more than a stratum has
    assert allocate(rows, units, mean_ic, 3, 0.5).sum() == 3  # too few for the floor


def test_same_seed_same_sample() -> None:
    units = population(100, seed=3)
    first, again = draw(units, 20, 7).sample, draw(units, 20, 7).sample
    pd.testing.assert_frame_equal(first, again)
    assert set(draw(units, 20, 8).sample["key"]) != set(first["key"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": 101}, "only 100 distinct ones: ask for at most 100"),
        ({"size": 0}, "ask for at least 1"),
        ({"bands": [0.5, 0.2]}, "edges must increase"),
        ({"bands": [0.0, 0.5]}, "strictly between 0 and 1"),
        ({"uncertainty_share": 1.5}, "uncertainty share 1.5"),
    ],
)
def test_bad_designs_are_named(kwargs: dict, message: str) -> None:
    options = {"size": 10, "seed": 0, **kwargs}
    with pytest.raises(DesignError, match=message):
        draw(population(100, seed=4), **options)
    with pytest.raises(DesignError, match=r"lack the columns \['frequency'\]"):
        draw(population(10, seed=4).drop(columns="frequency"), 5, 0)
