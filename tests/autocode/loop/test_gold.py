"""The gold standard as retraining and comparison read it, the hold-out, and the statistics of
the promotion rule (McNemar's exact test against the binomial formula, the decision rules)."""

from __future__ import annotations

from math import comb

import numpy as np
import pandas as pd
import pytest

from autocode.loop.compare import decide, mcnemar, paired_accuracy
from autocode.loop.gold import KEY, GoldError, design_of, gold_files, held_out, read_gold

from .conftest import gold_table, write_gold


@pytest.fixture(scope="module")
def nomenclature(naf2008):
    from autocode.train import restrict

    return restrict(naf2008, ["10", "56", "47"])


def test_files_and_folders(tmp_path, dev_rows):
    folder = write_gold(tmp_path / "gold", gold_table(dev_rows), parts=3)
    (folder / "nested").mkdir()
    gold_table(dev_rows.head(4)).to_parquet(folder / "nested" / "late.parquet")
    (folder / "notes.txt").write_text("not gold")
    files = gold_files([str(folder), str(folder / "campaign-0.parquet")])
    assert files == sorted(files) and len(files) == 4  # the repeated file once
    with pytest.raises(GoldError, match="not found"):
        gold_files([str(tmp_path / "nowhere")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(GoldError, match=r"no \.parquet file"):
        gold_files([str(tmp_path / "empty")])
    with pytest.raises(GoldError, match="no gold given"):
        gold_files([])


def test_a_campaign_folder_counts_its_latest_version_only(tmp_path, dev_rows, nomenclature):
    import json

    campaign = tmp_path / "gold" / "campaign-1"
    campaign.mkdir(parents=True)
    first = gold_table(dev_rows.head(10))
    first.to_parquet(campaign / "gold-20261201T000000000000Z.parquet")
    second = gold_table(dev_rows.head(30))  # a later export: the same tasks and more
    second.to_parquet(campaign / "gold-20261208T000000000000Z.parquet")
    (campaign / "manifest.json").write_text(
        json.dumps({"latest": "gold-20261208T000000000000Z.parquet", "versions": []})
    )
    write_gold(tmp_path / "gold" / "older", gold_table(dev_rows.iloc[40:50]), parts=1)
    gold = read_gold([str(tmp_path / "gold")], nomenclature)
    assert len(gold.rows) == 40
    assert sorted(f["rows"] for f in gold.files) == [10, 30]
    (campaign / "manifest.json").write_text("not json")
    with pytest.raises(GoldError, match="not a gold manifest"):
        gold_files([str(tmp_path / "gold")])


def test_response_weights_are_preferred(tmp_path, dev_rows, nomenclature):
    table = gold_table(dev_rows.head(8)).assign(response_weight=3.0)
    table.to_parquet(tmp_path / "g.parquet")
    design = design_of(read_gold([str(tmp_path / "g.parquet")], nomenclature).rows)
    assert design.weights.tolist() == [3.0] * 8


def test_flags_unknown_codes_and_design(tmp_path, dev_rows, nomenclature):
    table = gold_table(dev_rows)
    table.loc[0:4, "skipped"] = True
    table.loc[5:7, "unsure"] = True
    table.loc[8, "code"] = "9999Z"  # not in the nomenclature
    table.loc[9, "code"] = "0111Z"  # a real code outside the model's divisions
    table.loc[10, "code"] = "10"  # not a leaf code
    write_gold(tmp_path / "gold", table)
    gold = read_gold([str(tmp_path / "gold")], nomenclature, ["type_"])
    assert len(gold.rows) == len(table) - 11
    assert gold.left_out == {"skipped": 5, "unsure": 3, "unknown code": 2, "not a subclass code": 1}
    assert set(gold.invalid["code"]) == {"9999Z", "0111Z", "10"}
    assert "left out: 5 skipped, 3 unsure" in gold.summary()
    assert {"text", "code", "type_", "weight", "stratum", "gold_file", KEY} <= set(gold.rows)
    assert gold.rows[KEY].str.fullmatch("[0-9a-f]{16}").all()
    design = design_of(gold.rows)
    kept = table.iloc[11:]
    assert design.weights.sum() == pytest.approx(kept["weight"].sum())
    assert design.certain.sum() == (kept["inclusion_probability"] >= 1).sum()
    assert design_of(gold.rows.drop(columns="weight")) is None


def test_flags_as_text(tmp_path, dev_rows, nomenclature):
    table = gold_table(dev_rows.head(6)).astype({"skipped": str, "unsure": str})
    table["skipped"] = ["true", "False", "1", "", "no", "yes"]
    table.to_csv(tmp_path / "gold.csv", index=False)  # a CSV export reads as text
    gold = read_gold([str(tmp_path / "gold.csv")], nomenclature)
    assert gold.left_out == {"skipped": 3} and len(gold.rows) == 3


def test_empty_gold(tmp_path, dev_rows, nomenclature):
    table = gold_table(dev_rows.head(5)).assign(skipped=True)
    write_gold(tmp_path / "gold", table, parts=1)
    with pytest.raises(GoldError, match=r"no usable gold row.*5 skipped"):
        read_gold([str(tmp_path / "gold")], nomenclature)
    unknown = gold_table(dev_rows.head(5)).assign(code="0000Z")
    unknown.to_parquet(tmp_path / "unknown.parquet")
    with pytest.raises(GoldError, match="5 unknown code"):
        read_gold([str(tmp_path / "unknown.parquet")], nomenclature)
    pd.DataFrame({"description": ["x"], "code": ["1071C"]}).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(GoldError, match=r"columns \['text'\] missing"):
        read_gold([str(tmp_path / "bad.parquet")], nomenclature)


def test_bad_design(tmp_path, dev_rows, nomenclature):
    table = gold_table(dev_rows.head(5))
    table.loc[1, "weight"] = -2.0
    table.to_parquet(tmp_path / "g.parquet")
    gold = read_gold([str(tmp_path / "g.parquet")], nomenclature)
    with pytest.raises(GoldError, match="sampling weights must be positive"):
        design_of(gold.rows)


def test_holdout_is_seeded_stable_and_of_the_share():
    keys = [f"{i:016x}" for i in range(4000)]
    first = held_out(keys, 0.25, seed=3)
    assert abs(first.mean() - 0.25) < 4 * np.sqrt(0.25 * 0.75 / 4000)
    assert (held_out(keys[::-1], 0.25, seed=3) == first[::-1]).all()  # order does not matter
    assert (held_out(keys[:100], 0.25, seed=3) == first[:100]).all()  # stable as gold grows
    assert (held_out(keys, 0.25, seed=4) != first).any()
    assert not held_out(keys, 0.0, seed=3).any()
    with pytest.raises(GoldError, match="hold-out share"):
        held_out(keys, 1.0, 0)


def test_mcnemar_is_the_exact_binomial_test():
    # champion alone right on 8 rows, challenger alone on 1, both right on 5, both wrong on 2
    champion = np.array([1] * 8 + [0] * 1 + [1] * 5 + [0] * 2, dtype=bool)
    challenger = np.array([0] * 8 + [1] * 1 + [1] * 5 + [0] * 2, dtype=bool)
    test = mcnemar(champion, challenger)
    assert (test["n10"], test["n01"]) == (8, 1)
    worse = sum(comb(9, k) for k in range(8, 10)) / 2**9  # P(X >= 8), X ~ B(9, 1/2)
    assert test["p_challenger_worse"] == pytest.approx(worse)
    assert test["p_challenger_better"] == pytest.approx(1 - sum(comb(9, k) for k in (0,)) / 2**9)
    assert test["p_two_sided"] == pytest.approx(min(1.0, 2 * worse))
    same = mcnemar(champion, champion)
    assert same["n10"] == same["n01"] == 0 and same["p_two_sided"] == 1.0


def test_paired_accuracy_without_weights_is_the_paired_difference():
    from autocode.evaluate import SampleDesign

    rng = np.random.default_rng(1)
    a, b = rng.random(400) < 0.6, rng.random(400) < 0.7
    out = paired_accuracy(a, b, SampleDesign.of(np.ones(400)))
    d = b.astype(float) - a.astype(float)
    assert out["delta_accuracy"] == pytest.approx(d.mean())
    half = 1.959963984540054 * d.std(ddof=1) / np.sqrt(400)
    assert out["delta_accuracy_high"] - out["delta_accuracy"] == pytest.approx(half)


COVERAGE = {
    "coverage_champion": 0.3,
    "coverage_challenger": 0.32,
    "delta_coverage_upper_bound": 0.05,
}


@pytest.mark.parametrize(
    ("rule", "n10", "n01", "upper", "promote", "why"),
    [
        ("not-worse", 8, 1, 0.05, False, "less accurate"),
        ("not-worse", 3, 2, 0.05, True, "not shown worse"),
        ("not-worse", 1, 8, -0.01, False, "fewer rows automatically"),
        ("better", 3, 2, 0.05, False, "not shown more accurate"),
        ("better", 1, 8, 0.05, True, "more accurate"),
        ("better", 1, 8, -0.01, False, "codes fewer rows"),
    ],
)
def test_rules(rule, n10, n01, upper, promote, why):
    champion = np.array([True] * n10 + [False] * n01)
    test = mcnemar(champion, ~champion)
    decision, reason = decide(rule, 0.05, test, {**COVERAGE, "delta_coverage_upper_bound": upper})
    assert decision is promote and why in reason
