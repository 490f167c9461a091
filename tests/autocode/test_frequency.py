"""The register's code frequencies as a prior over codes (`code_frequencies`): the estimate on a
hand-made hierarchy, the table's bad input, then a real cold-start training of three divisions
given the code counts of half of dev1000's descriptions (read in place, never copied), scored on
the other half, saved and loaded."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from .test_calibration import DEV1000, config

CLASSES = ["47.11A", "47.11B", "47.19A", "68.20A", "68.20B"]


def path(code: str) -> list[str]:
    return [{"4": "G", "6": "L"}[code[0]], code[:2], code[:4], code[:5], code]


def test_the_frequencies_are_smoothed_shares_along_the_hierarchy(tmp_path):
    """p(code) = Π over its path of (n(node) + s / children(parent)) / (n(parent) + s); the
    factor is p ^ power, scaled so that its largest is 1 (log 0); a code the table never saw
    keeps a share of its branch, more in a counted branch than in one never counted."""
    from autocode.model.frequency import CodeFrequencies

    counts = {"47.11A": 6.0, "47.11B": 2.0, "99.99Z": 5.0}  # 99.99Z: not a class, ignored
    frequencies = CodeFrequencies(smoothing=2.0, power=1.0).fit(counts, CLASSES, path)
    assert frequencies.rows == 8.0
    # 47.11A: root → G (2 sections), G → 47 (1 child), 47 → 47.1 (1), 47.1 → 47.11 (2: 47.11,
    # 47.19), 47.11 → 47.11A (2: A, B)
    p = (8 + 1) / (8 + 2) * (8 + 2) / (8 + 2) * (8 + 2) / (8 + 2) * (8 + 1) / (8 + 2)
    p *= (6 + 1) / (8 + 2)
    p_68 = (0 + 1) / (8 + 2) * 1 * 1 * 1 * (0 + 1) / (0 + 2)  # 68.20A: a share of a share
    log_p = np.log([p, p_68])
    got = frequencies.log_factors[[0, 3]]
    np.testing.assert_allclose(got - got[0], log_p - log_p[0], rtol=1e-5)
    assert frequencies.log_factors.max() == 0.0 and frequencies.log_factors[0] == 0.0
    order = np.argsort(-frequencies.log_factors)
    assert [CLASSES[i] for i in order[:3]] == ["47.11A", "47.11B", "47.19A"]
    halved = CodeFrequencies(smoothing=2.0, power=0.5).fit(counts, CLASSES, path)
    np.testing.assert_allclose(halved.log_factors, frequencies.log_factors / 2, rtol=1e-5)
    frequencies.save(tmp_path / "frequencies")
    loaded = CodeFrequencies.load(tmp_path / "frequencies")
    np.testing.assert_array_equal(loaded.log_factors, frequencies.log_factors)
    assert (loaded.classes, loaded.meta()) == (CLASSES, frequencies.meta())
    for smoothing, power in ((0.0, 1.0), (5.0, -1.0)):
        with pytest.raises(ValueError, match="must be"):
            CodeFrequencies(smoothing, power)


def test_the_frequencies_shift_the_members_that_do_not_follow_them():
    """Pooled: Σ_i w_i softmax(logits_i + log f) over fastText and TF-IDF, the nearest
    descriptions' softmax as it is (its votes already count descriptions)."""
    from autocode.model import (
        EnsembleClassifier,
        FastTextClassifier,
        NearestClassifier,
        softmax,
    )
    from autocode.model.tfidf import TfidfClassifier

    ensemble = EnsembleClassifier(
        [FastTextClassifier(), TfidfClassifier(), NearestClassifier()], [0.2, 0.8, 1.0], None
    )
    ensemble.classes = CLASSES
    rng = np.random.default_rng(0)
    logits = [rng.normal(size=(4, 5)).astype(np.float32) for _ in range(3)]
    log_f = np.log(np.array([0.5, 0.2, 0.1, 0.1, 0.1], dtype=np.float32))
    kinds = ["fasttext", "tfidf", "knn"]
    parts = [(k, slice(None), x, w) for k, x, w in zip(kinds, logits, [0.2, 0.8, 1.0], strict=True)]
    out, _ = ensemble.pool_logits(4, iter(parts), 2.0, None, log_f)
    shifted = 0.1 * softmax(logits[0] + log_f) + 0.4 * softmax(logits[1] + log_f)
    expected = shifted + 0.5 * softmax(logits[2])
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    plain, _ = ensemble.pool_logits(4, iter(parts), 2.0)
    assert (out[:, 0] > plain[:, 0]).all() and (out[:, 4] < plain[:, 4]).all()


def test_a_bad_frequencies_config_or_table_is_refused_in_one_line(tmp_path):
    from autocode.train import ConfigError, TrainConfig, load_nomenclature, read_code_counts

    for raw, message in (
        ({"code_frequencies": "counts.csv"}, "a mapping of"),
        ({"code_frequencies": {"uri": 3}}, "a mapping of"),
        ({"code_frequencies": {"uri": "c.csv", "colum": "x"}}, "unknown keys"),
        ({"code_frequencies": {"uri": "c.csv", "power": -1}}, "power must be"),
        ({"code_frequencies": {"uri": "c.csv"}, "model": "tfidf"}, "only an ensemble"),
    ):
        with pytest.raises(ConfigError, match=message):
            TrainConfig.from_dict(raw)
    assert TrainConfig.from_dict({}).code_frequencies == {"smoothing": 5.0, "power": 0.75}
    assert TrainConfig.from_dict({"code_frequencies": None}).code_frequencies is None
    assert TrainConfig.from_dict({"model": "tfidf"}).code_frequencies  # (not applied)
    nomenclature, _ = load_nomenclature(TrainConfig())
    tables = {
        "no_code.csv": ("naf,count\n4711A,3\n", "no column 'code'"),
        "bad_count.csv": ("code,count\n4711A,3\n4711B,many\n", "'many' is not a count"),
        "negative.csv": ("code,count\n4711A,-3\n", "'-3' is not a count"),
        "no_leaf.csv": ("code\n47\nnot a code\n", "counts no subclass code"),
    }
    for name, (text, message) in tables.items():
        (tmp_path / name).write_text(text)
        cfg = TrainConfig.from_dict({"code_frequencies": {"uri": str(tmp_path / name)}})
        with pytest.raises(ConfigError, match=message):
            read_code_counts(cfg, nomenclature)
    (tmp_path / "units.csv").write_text("code\n4711A\n47.11A\n4711B\nnot a code\n47\n")
    cfg = TrainConfig.from_dict({"code_frequencies": {"uri": str(tmp_path / "units.csv")}})
    assert read_code_counts(cfg, nomenclature) == ({"47.11A": 2.0, "47.11B": 1.0}, 2)
    cfg = TrainConfig.from_dict(
        {"code_frequencies": {"uri": str(tmp_path / "units.csv"), "count_column": "n"}}
    )
    with pytest.raises(ConfigError, match="no column 'n' \\(count_column\\)"):
        read_code_counts(cfg, nomenclature)


@pytest.fixture(scope="module")
def halves(tmp_path_factory):
    """dev1000's descriptions of the three divisions in two random halves, and the first half's
    code counts (as a register's table would give them: code, count)."""
    from autocode.train import load_nomenclature

    nomenclature, _ = load_nomenclature(config())
    raw = pd.read_csv(DEV1000, dtype=str, keep_default_na=False)
    rows = raw[raw["code"].str[:2].isin(["43", "68", "56"])].reset_index(drop=True)
    rows["code"] = [nomenclature.normalize(c) for c in rows["code"]]
    first = np.random.default_rng(0).permutation(len(rows)) % 2 == 0
    table = tmp_path_factory.mktemp("frequencies") / "register-counts.csv"
    counts = rows[first]["code"].str.replace(".", "", regex=False).value_counts()
    counts = counts.rename_axis("code").reset_index(name="count")
    unknown = pd.DataFrame({"code": ["9999Z"], "count": [4]})  # not a code: left out, said
    pd.concat([counts, unknown]).to_csv(table, index=False)
    return rows[first], rows[~first], table


@pytest.fixture(scope="module")
def trained(halves, tmp_path_factory):
    """A cold-start model of the three divisions (no description) given the first half's
    code counts, saved as a pyfunc."""
    from autocode.train import train

    first, _, table = halves
    output = tmp_path_factory.mktemp("frequencies-model") / "model"
    cold = config(train=[], code_frequencies={"uri": str(table)}, output=str(output))
    messages: list[str] = []
    result = train(cold, progress=messages.append)
    said = [m for m in messages if m.startswith("code frequencies")]
    assert said == [
        f"code frequencies: {len(first)} units of {first['code'].nunique()} codes from {table}; "
        "rows left out, not subclass codes: 1"
    ]
    return result


def test_a_cold_start_model_codes_real_descriptions_better_with_the_code_frequencies(
    halves, trained
):
    """On the descriptions of the other half (never counted): more are right with the
    frequencies than with the same model without them; still nothing automatic (cold start)."""
    first, second, _ = halves
    coder = trained.coder
    frequencies = coder.classifier.frequencies
    assert frequencies is not None and frequencies.rows == len(first)
    assert coder.threshold > 1.0 and coder.info["threshold_basis"]["rule"] == "cold start"
    with_them = coder.predict(second[["text_description"]])["code_1"].to_numpy()
    coder.classifier.frequencies = None
    try:
        without = coder.predict(second[["text_description"]])["code_1"].to_numpy()
    finally:
        coder.classifier.frequencies = frequencies
    truth = second["code"].to_numpy()
    right, right_without = (with_them == truth).mean(), (without == truth).mean()
    assert right > right_without + 0.03, (right, right_without)


def test_the_saved_model_keeps_its_code_frequencies(halves, trained):
    """Through MLflow's pyfunc and the API's predictor: the same codes and probabilities as the
    coder in memory, for rows with and without register variables."""
    import mlflow.pyfunc

    from autocode.model import EnsembleClassifier, load_coder
    from autocode.serve.predictor import Predictor

    first, second, table = halves
    rows = (
        second[["text_description", "type_"]].head(20).rename(columns={"text_description": "text"})
    )
    expected = trained.coder.predict(rows)
    coded = mlflow.pyfunc.load_model(str(trained.output)).predict(rows)
    assert coded["code_1"].tolist() == expected["code_1"].tolist()
    loaded = load_coder(str(trained.output))
    assert isinstance(loaded.classifier, EnsembleClassifier)
    assert loaded.classifier.frequencies is not None
    proba = Predictor(loaded).proba(rows["text"].tolist(), {})
    np.testing.assert_allclose(proba, trained.coder.predict_proba(rows[["text"]]), atol=1e-6)
    saved = json.loads((trained.output / "artifacts" / "coder" / "coder.json").read_text())
    assert saved["classifier"]["frequencies"] == {
        "smoothing": 5.0,
        "power": 0.75,
        "rows": float(len(first)),
        "source": f"table {table}",
    }


def test_the_automatic_decision_is_calibrated_with_the_frequencies(halves):
    """With experts' descriptions and a frequencies table, the threshold rests on cross-fitted
    scores that carry the frequencies: fold 0's model refit by hand (the final temperatures,
    the frequencies fitted as training fits them) codes its descriptions as the pool did."""
    from autocode.model import EnsembleClassifier
    from autocode.train import (
        _members,
        build_coder,
        description_folds,
        fit_classifier,
        fit_coder,
        load_inputs,
    )

    _, _, table_uri = halves
    cfg = config(code_frequencies={"uri": str(table_uri)})
    inputs = load_inputs(cfg)
    table = inputs.table
    coder, validation, _ = fit_coder(cfg, inputs.nomenclature, table)
    assert isinstance(coder.classifier, EnsembleClassifier) and validation is not None
    assert coder.classifier.frequencies is not None
    assert coder.info["threshold_basis"]["rule"] == "cross-fitted descriptions"
    fold_of = description_folds(cfg, table, 4, cfg.seed)
    kept, held = table[fold_of != 0], table[fold_of == 0]
    fold_coder = build_coder(cfg, inputs.nomenclature, table)
    fit_classifier(fold_coder, cfg, kept)
    fold_classifier = fold_coder.classifier
    assert isinstance(fold_classifier, EnsembleClassifier)
    assert fold_classifier.frequencies is not None
    for fold_member, member in zip(_members(fold_coder), _members(coder), strict=True):
        fold_member.temperature = member.temperature
    pooled = validation.predictions.iloc[: len(held)]
    by_hand = fold_coder.predict(held)
    np.testing.assert_allclose(by_hand["proba_1"], pooled["proba_1"], atol=1e-5)
    np.testing.assert_allclose(by_hand["ic"], pooled["ic"], atol=1e-5)
    fold_classifier.frequencies = None  # without them the fold codes otherwise
    assert not np.allclose(fold_coder.predict(held)["proba_1"], pooled["proba_1"], atol=1e-3)


def test_descriptions_count_by_their_design_weight(tmp_path):
    """``weight_column``: each description counts by its weight (a missing one: once); a
    missing column or a weight that is not a number ≥ 0 is refused in one line."""
    from autocode.model import EnsembleClassifier
    from autocode.train import ConfigError, build_coder, fit_frequencies, load_inputs

    rows = pd.DataFrame(
        {
            "text_description": ["Plomberie", "Maçonnerie", "Location meublée", "Restaurant"],
            "code": ["4322A", "4399C", "6820A", "5610A"],
            "w": ["10", "2.5", "", "1"],
        }
    )
    path = tmp_path / "weighted.csv"
    rows.to_csv(path, index=False)
    dataset = {"uri": str(path), "name": "campaign", "weight_column": "w"}
    cfg = config(train=[dataset], cold_start=True)
    inputs = load_inputs(cfg)
    coder = build_coder(cfg, inputs.nomenclature, inputs.table)
    coder.classifier.classes = sorted(set(inputs.table["code"]))
    assert isinstance(coder.classifier, EnsembleClassifier)
    frequencies = fit_frequencies(cfg, coder, inputs.table)
    assert frequencies is not None and frequencies.rows == 14.5  # 10 + 2.5 + 1 (missing) + 1
    assert frequencies.source == "4 descriptions coded by experts by their design weights"
    top = coder.classifier.classes[int(np.argmax(frequencies.log_factors))]
    assert top == "43.22A"
    for weights, message in (
        (["10", "-1", "", "1"], "'-1' is not a weight"),
        (["10", "many", "", "1"], "'many' is not a weight"),
    ):
        rows.assign(w=weights).to_csv(path, index=False)
        with pytest.raises(ConfigError, match=message):
            load_inputs(cfg)
    rows.drop(columns="w").to_csv(path, index=False)
    with pytest.raises(ConfigError, match="no column 'w' \\(weight_column\\)"):
        load_inputs(cfg)


def test_without_a_table_the_frequencies_are_the_experts_descriptions():
    """The default (no uri): learnt from the train datasets' descriptions coded by experts, not
    from notes phrases nor a model's codes; at cold start there are none."""
    from autocode.model import EnsembleClassifier
    from autocode.train import build_coder, fit_frequencies, load_inputs

    inputs = load_inputs(config())
    table = inputs.table
    coder = build_coder(config(), inputs.nomenclature, table)
    coder.classifier.classes = sorted(set(table["code"]))
    assert isinstance(coder.classifier, EnsembleClassifier)
    frequencies = fit_frequencies(config(), coder, table)
    described = table[table["source"] == "dev1000"]
    assert frequencies is not None and frequencies.rows == len(described)
    assert frequencies.source == f"{len(described)} descriptions coded by experts"
    top = coder.classifier.classes[int(np.argmax(frequencies.log_factors))]
    assert top == described["code"].value_counts().index[0]
    assert fit_frequencies(config(), coder, table[table["source"] != "dev1000"]) is None
    model_coded = config(train=[{"uri": str(DEV1000), "name": "teacher", "labels": "model"}])
    assert fit_frequencies(model_coded, coder, table.assign(source="teacher")) is None
    assert fit_frequencies(config(code_frequencies=None), coder, table) is None
