"""Drift statistics against scipy and by hand, and the decision rule's false-alarm rate over
many i.i.d. pairs of windows (fixed seeds), with its power on shifted windows."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from autocode.monitor import drift
from autocode.monitor.levels import level_table


def test_ks_from_counts_is_scipys_two_sample_test() -> None:
    rng = np.random.default_rng(0)
    a = np.round(rng.beta(2, 3, 700), 2)  # rounded: many ties, as ICs have
    b = np.round(rng.beta(2.4, 3, 500), 2)
    va, ca = np.unique(a, return_counts=True)
    vb, cb = np.unique(b, return_counts=True)
    d, p = drift.ks_from_counts(va, ca, vb, cb)
    expected = stats.ks_2samp(a, b, method="asymp")
    assert d == pytest.approx(expected.statistic, abs=1e-12)
    assert p == pytest.approx(expected.pvalue, rel=1e-9)
    same = drift.ks_from_counts(va, ca, va, ca * 3)
    assert same == (0.0, 1.0)


def test_divergences_by_hand() -> None:
    reference, current = np.array([49.5, 49.5]), np.array([19.5, 79.5])  # +0.5 each: 50/50, 20/80
    values = drift.divergences(reference, current)
    p, q = np.array([0.5, 0.5]), np.array([0.2, 0.8])
    assert values["psi"] == pytest.approx(float(np.sum((q - p) * np.log(q / p))))
    bc = float(np.sum(np.sqrt(p * q)))
    assert values["hellinger"] == pytest.approx(math.sqrt(1 - bc))
    assert values["bhattacharyya"] == pytest.approx(-math.log(bc))
    assert values["kl"] == pytest.approx(float(np.sum(q * np.log(q / p))))
    m = (p + q) / 2
    js = 0.5 * np.sum(p * np.log2(p / m)) + 0.5 * np.sum(q * np.log2(q / m))
    assert values["jensen_shannon"] == pytest.approx(math.sqrt(js))
    # a code absent from one window: finite values (smoothing)
    assert all(
        math.isfinite(v) for v in drift.divergences(np.array([10, 0]), np.array([0, 10])).values()
    )


def test_pooling_keeps_every_expected_count_at_least_five() -> None:
    reference = pd.Series({"A": 100, "B": 50, "C": 3, "D": 1, "E": 2})
    current = pd.Series({"A": 90, "B": 60, "C": 2, "F": 4})
    table = drift.pool(reference, current)
    assert table.to_numpy().sum() == reference.sum() + current.sum()  # nothing dropped
    shares = table.sum() / table.to_numpy().sum()
    expected = np.outer(table.sum(axis=1), shares)
    assert (expected >= 5).all()
    assert drift.OTHER in table.index and {"A", "B"} <= set(table.index)


def _sample(rng, n, codes, weights, ic_beta, levels, mapping) -> drift.Sample:
    drawn = pd.Series(rng.choice(codes, size=n, p=weights)).value_counts()
    ics = np.round(rng.beta(*ic_beta, size=n), 6)
    values, counts = np.unique(ics, return_counts=True)
    by_level = {
        level: drawn.groupby(mapping.loc[drawn.index, level].to_numpy()).sum() for level in levels
    }
    return drift.Sample("w", values, counts, by_level)


@pytest.fixture(scope="module")
def traffic(naf2008):
    """A realistic mix of predicted subclasses (Zipf-like over the 732 of NAF rév. 2)."""
    rng = np.random.default_rng(42)
    codes = naf2008.codes("subclass")
    weights = 1.0 / np.arange(1, len(codes) + 1) ** 1.1
    weights = rng.permutation(weights / weights.sum())
    mapping = level_table(codes, naf2008).set_index("code")
    return codes, weights, mapping


@pytest.mark.parametrize("size", [200, 2000])
def test_false_alarm_rate_over_iid_windows(traffic, size: int) -> None:
    """Pairs of windows drawn from one distribution: flagged at most about alpha of the time
    (Bonferroni over the 4 tests; alpha 0.01). Measured: see docs/monitoring.md."""
    codes, weights, mapping = traffic
    config = drift.DriftConfig()
    rng = np.random.default_rng(2026)
    trials = 150
    flagged = 0
    for _ in range(trials):
        a = _sample(rng, size, codes, weights, (0.9, 2.2), config.levels, mapping)
        b = _sample(rng, size, codes, weights, (0.9, 2.2), config.levels, mapping)
        flagged += drift.compare_counts(a, b, config).drift
    assert flagged / trials <= 0.02, f"{flagged} false alarms in {trials}"


def test_a_shifted_mix_of_sections_and_a_lower_ic_are_flagged(traffic) -> None:
    codes, weights, mapping = traffic
    sections = mapping.loc[codes, "section"].to_numpy()
    config = drift.DriftConfig()
    rng = np.random.default_rng(5)
    shifted = weights * np.where(np.isin(sections, ["F", "I"]), 4.0, 1.0)
    shifted /= shifted.sum()
    for _ in range(20):
        a = _sample(rng, 2000, codes, weights, (0.9, 2.2), config.levels, mapping)
        b = _sample(rng, 2000, codes, shifted, (0.9, 2.2), config.levels, mapping)
        report = drift.compare_counts(a, b, config)
        flagged = {t.variable for t in report.tests if t.flagged}
        assert report.drift and flagged and all(v.startswith("codes:") for v in flagged)
        lower = _sample(rng, 2000, codes, weights, (0.6, 2.6), config.levels, mapping)
        report = drift.compare_counts(a, lower, config)
        assert [t.variable for t in report.tests if t.flagged] == ["ic"]


def test_small_windows_are_not_tested() -> None:
    codes = {"section": pd.Series({"C": 1})}
    one = drift.Sample("one", [0.5], [1], codes)
    empty = drift.Sample("empty", [], [], {"section": pd.Series(dtype="int64")})
    big = drift.Sample("big", [0.1, 0.9], [400, 400], {"section": pd.Series({"C": 800})})
    report = drift.compare_counts(empty, one, drift.DriftConfig())
    assert not report.drift and report.tests == []
    assert report.message == (
        "not tested: the reference window has 0 predictions (fewer than 50); the current window "
        "has 1 prediction (fewer than 50)"
    )
    report = drift.compare_counts(big, big, drift.DriftConfig(levels=("section",)))
    assert not report.drift
    assert report.tests[1].note == "one category only: nothing to compare"
