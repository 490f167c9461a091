"""The automatic decision calibrated on cross-fitted real descriptions (issue 17): real training
on dev1000's descriptions of three divisions (read in place from ../shared/data/annotations,
never copied) with the cold start of those divisions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
DEV1000 = REPO.parent / "shared" / "data" / "annotations" / "labelstudio_dev1000.csv"
#: Divisions with many dev1000 rows: specialised construction, real estate, restaurants.
CODES = ["43", "68", "56"]
FAST = {"fasttext": {"epoch": 20, "dim": 20, "thread": 1}, "tfidf": {}, "knn": {}}


def config(**overrides):
    from autocode.train import TrainConfig

    if not DEV1000.is_file():
        pytest.fail(f"{DEV1000} not found (the shared data folder beside the repository)")
    raw = {
        "only_codes": CODES,
        "train": [{"uri": str(DEV1000), "name": "dev1000"}],
        "params": {"members": FAST},
        **overrides,
    }
    return TrainConfig.from_dict(raw)


@pytest.fixture(scope="module")
def inputs():
    from autocode.train import load_inputs

    return load_inputs(config())


def test_the_threshold_rests_on_cross_fitted_scores_of_all_descriptions(inputs):
    """Every labelled description is coded by one of 4 models fit without it; the threshold is
    the smallest IC whose rows are right / (automatic + 1) ≥ 0.90 there; the model is then fit
    on all rows and says in its info what its threshold rests on. The pooled out-of-fold
    probabilities are exactly what a fold's own model codes with the final temperatures."""
    from autocode.evaluate import largest_coverage
    from autocode.train import (
        _members,
        build_coder,
        description_folds,
        fit_classifier,
        fit_coder,
    )

    cfg = config()
    table = inputs.table
    described = table[table["source"] == "dev1000"]
    assert len(described) > 200
    coder, validation, timings = fit_coder(cfg, inputs.nomenclature, table)
    assert validation is not None
    assert {"calibration_fits_s", "fit_s"} <= set(timings)
    predictions = validation.predictions
    assert len(predictions) == len(described)  # all of them, each once
    basis = coder.info["threshold_basis"]
    assert basis["rule"] == "cross-fitted descriptions"
    assert basis["folds"] == 4 and basis["descriptions"] == len(described)
    ic = predictions["ic"].to_numpy()
    correct = predictions["correct"].to_numpy()
    # chosen at 0.92: the target plus the refit margin
    assert basis["chosen_at"] == 0.92
    coverage, expected = largest_coverage(ic, correct, 0.92, guard=1)
    assert coverage > 0 and coder.threshold == expected
    automatic = ic >= coder.threshold
    assert (predictions["auto"].to_numpy() == automatic).all()
    assert correct[automatic].sum() / (automatic.sum() + 1) >= 0.92
    # the val_* metrics are those of the chosen threshold, not of the provisional one
    assert validation.metrics["auto_rate"] == pytest.approx(automatic.mean())
    assert validation.metrics["auto_accuracy"] == pytest.approx(correct[automatic].mean())
    assert largest_coverage(ic, correct, 0.90, guard=1)[1] <= coder.threshold
    assert basis["automatic"] == automatic.sum()
    low, high = basis["accuracy_interval"]
    assert low <= basis["accuracy"] == round(correct[automatic].mean(), 4) <= high
    # the final model saw every row: it is right on more of the descriptions than the folds
    assert (coder.predict(described)["code_1"] == described["code"].to_numpy()).mean() > (
        correct.mean()
    )
    # fold 0 refit by hand, with the final temperatures, codes its rows as the pool says
    fold_of = description_folds(cfg, table, 4, cfg.seed)
    kept, held = table[fold_of != 0], table[fold_of == 0]
    fold_coder = build_coder(cfg, inputs.nomenclature, table)
    fit_classifier(fold_coder, cfg, kept)
    for fold_member, member in zip(_members(fold_coder), _members(coder), strict=True):
        fold_member.temperature = member.temperature
    by_hand = fold_coder.predict(held)
    pooled = predictions.iloc[: len(held)]
    assert (by_hand["code_1"].to_numpy() == pooled["code_1"].to_numpy()).all()
    np.testing.assert_allclose(by_hand["ic"], pooled["ic"], atol=1e-5)
    np.testing.assert_allclose(by_hand["proba_3"], pooled["proba_3"], atol=1e-5)


def test_the_temperatures_are_fitted_on_the_cross_fitted_scores(inputs):
    """calibrate: false keeps the members' default temperatures; true fits them."""
    from autocode.train import _members, fit_coder

    fitted, _, _ = fit_coder(config(), inputs.nomenclature, inputs.table)
    kept, _, _ = fit_coder(config(calibrate=False), inputs.nomenclature, inputs.table)
    defaults = [type(m).default_temperature for m in _members(kept)]
    assert [m.temperature for m in _members(kept)] == defaults
    assert all(m.temperature != d for m, d in zip(_members(fitted), defaults, strict=True))


def test_nested_cross_validation_shares_the_calibration_fits(inputs):
    """With calibration_folds = folds - 1, the calibration folds of an outer fold's model are
    the other outer folds: its cross-fitted scores cover exactly the descriptions it was trained
    on, each scored by a model that saw neither it nor the outer fold."""
    from autocode.train import cross_validate

    seen = []

    def record(seed, fold, coder, held, held_out):
        seen.append((fold, set(held.index), held_out, coder))

    outcome = cross_validate(config(calibration_folds=2), folds=3, record=record)
    assert outcome.rows == "descriptions" and len(seen) == 3
    every = set().union(*(held for _, held, _, _ in seen))
    for _, held, held_out, coder in seen:
        assert held_out is not None and len(held_out) == 2
        scored = [set(part.index) for part in held_out]
        assert not scored[0] & scored[1] and not (scored[0] | scored[1]) & held
        assert scored[0] | scored[1] == every - held
        assert coder.info["threshold_basis"]["rule"] == "cross-fitted descriptions"
    evaluation = outcome.evaluations[0]
    assert evaluation.metrics["n"] == len(every)
    assert 0 < evaluation.metrics["accuracy"] < 1


def test_calibration_folds_are_checked_and_can_be_turned_off(inputs):
    from autocode.train import ConfigError, fit_coder

    with pytest.raises(ConfigError, match="calibration_folds: a whole number"):
        config(calibration_folds=-1)
    with pytest.raises(ConfigError, match=r"refit_margin: from 0 to 0\.10"):
        config(refit_margin=0.2)
    coder, _, _ = fit_coder(config(calibration_folds=0), inputs.nomenclature, inputs.table)
    assert coder.info["threshold_basis"]["rule"] == "held-out descriptions"


def test_rows_coded_by_a_model_are_trained_on_never_calibrated_on(inputs, tmp_path):
    """A train dataset with ``labels: model`` (a teacher's codes: `autocode distill`) is fit on
    but never chosen a threshold on: alone it leaves the model at cold start (nothing
    automatic); beside experts' rows, only theirs are cross-fitted (the validation), and nothing
    is automatic either (a teacher trained on them leaks their codes into that calibration:
    measured on dev1000). Here the "teacher" gives wrong codes (the experts' shuffled), which a
    threshold chosen on them would show."""
    import pandas as pd

    from autocode.train import NO_AUTOMATIC_CODING, ConfigError, fit_coder, load_inputs

    raw = pd.read_csv(DEV1000, dtype=str)
    raw = raw[raw["code"].str[:2].isin(CODES)].reset_index(drop=True)
    experts, taught = raw.iloc[: len(raw) // 2], raw.iloc[len(raw) // 2 :].copy()
    taught["code"] = np.random.default_rng(0).permutation(taught["code"].to_numpy())
    experts.to_csv(tmp_path / "experts.csv", index=False)
    taught.to_csv(tmp_path / "taught.csv", index=False)
    model_rows = {"uri": str(tmp_path / "taught.csv"), "name": "teacher", "labels": "model"}

    alone = config(train=[model_rows])
    table = load_inputs(alone).table
    coder, _, _ = fit_coder(alone, inputs.nomenclature, table)
    basis = coder.info["threshold_basis"]
    assert basis["rule"] == "cold start" and basis["descriptions"] == 0
    assert coder.threshold == NO_AUTOMATIC_CODING
    trained = table[table["source"] == "teacher"]
    assert len(trained) == len(taught)
    # fit on: the model learnt the teacher's (wrong) codes of its rows
    assert (coder.predict(trained)["code_1"] == trained["code"].to_numpy()).mean() > 0.5

    both = config(train=[{"uri": str(tmp_path / "experts.csv"), "name": "experts"}, model_rows])
    table = load_inputs(both).table
    coder, validation, _ = fit_coder(both, inputs.nomenclature, table)
    basis = coder.info["threshold_basis"]
    assert basis["rule"] == "experts' and a model's codes" and "passes their" in basis["note"]
    assert coder.threshold == NO_AUTOMATIC_CODING
    assert basis["descriptions"] == len(experts) == (table["source"] == "experts").sum()
    assert validation is not None and len(validation.predictions) == len(experts)
    assert not validation.predictions["auto"].any()
    # the experts' rows alone: a threshold as before
    only = config(train=[{"uri": str(tmp_path / "experts.csv"), "name": "experts"}])
    coder, _, _ = fit_coder(only, inputs.nomenclature, load_inputs(only).table)
    assert coder.info["threshold_basis"]["rule"] == "cross-fitted descriptions"

    with pytest.raises(
        ConfigError, match=r"labels: 'teacher' is not one of \['experts', 'model'\]"
    ):
        config(train=[{**model_rows, "labels": "teacher"}])
    with pytest.raises(ConfigError, match="two datasets named 'teacher'"):
        config(train=[model_rows, {**model_rows, "labels": "experts"}])
