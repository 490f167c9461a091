import numpy as np
import pandas as pd
import pytest

from autocode.evaluate import (
    automatic_coding_curve,
    evaluate_predictions,
    expected_calibration_error,
    largest_coverage,
    write_figures,
)
from autocode.model import (
    Coder,
    FastTextClassifier,
    TfidfClassifier,
    fit_temperature,
    load_coder,
    make_classifier,
    softmax,
)
from autocode.train import restrict

ROWS = pd.DataFrame(
    {
        "text": ["Boulangerie pâtisserie artisanale", "restaurant traditionnel", "FRITERIE"],
        "type_": ["C", "M", None],
    }
)


@pytest.fixture(scope="module")
def small_nomenclature(naf2008):
    return restrict(naf2008, ["10", "56"])


@pytest.fixture(scope="module")
def cold_start(small_nomenclature, notes_fr):
    from autocode.data import build_cold_start

    return build_cold_start(small_nomenclature, notes_fr)


@pytest.mark.parametrize("kind", ["fasttext", "tfidf"])
def test_each_classifier_learns_and_round_trips(kind, cold_start, small_nomenclature, tmp_path):
    params = {"epoch": 60, "dim": 30, "thread": 1} if kind == "fasttext" else {}
    coder = Coder(make_classifier(kind, params), small_nomenclature)
    coder.classifier.fit(coder.features(cold_start), cold_start["code"].tolist())
    proba = coder.predict_proba(ROWS)
    assert proba.shape == (3, len(small_nomenclature.codes()))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-4)
    coded = coder.predict(ROWS, k=3)
    assert coded.loc[0, "code_1"].startswith("10.71")
    assert coded.loc[1, "code_1"].startswith("56.10")
    coder.save(tmp_path / "coder")
    again = load_coder(tmp_path / "coder")
    np.testing.assert_allclose(again.predict_proba(ROWS), proba, rtol=1e-5, atol=1e-6)


def test_fasttext_probabilities_match_fasttext_predict(cold_start):
    model = FastTextClassifier(epoch=5, dim=10, thread=1).fit(
        cold_start["text"], cold_start["code"]
    )
    texts = ["boulangerie", "restaurant rapide"]
    mine = model.predict_proba(texts)
    labels, probas = model._model.predict(texts, k=3)
    for row, (row_labels, row_probas) in enumerate(zip(labels, probas, strict=True)):
        for label, p in zip(row_labels, row_probas, strict=True):
            column = model.classes.index(label.removeprefix("__label__"))
            assert abs(mine[row, column] - p) < 1e-4


def test_output_columns(small_model):
    coder = small_model.coder
    coded = coder.predict(ROWS, k=2, threshold=0.0)
    expected = ["code_1", "proba_1", "label_1", "code_2", "proba_2", "label_2", "ic", "auto"]
    for level in coder.nomenclature.levels:
        expected += [level, f"{level}_label"]
    assert list(coded.columns) == expected
    assert (coded["ic"] == coded["proba_1"] - coded["proba_2"]).all()
    assert coded["auto"].all()
    assert (coded["proba_1"] >= coded["proba_2"]).all()
    assert coded.loc[0, "section"] == "C"
    assert coded.loc[0, "subclass"] == coded.loc[0, "code_1"]
    assert coder.predict(ROWS.head(0)).empty


def test_categorical_variables_are_tokens(small_nomenclature):
    coder = Coder(TfidfClassifier(), small_nomenclature, categorical=("type_", "nature"))
    assert coder.features(ROWS)[2] == "friter TYPE_NaN NATURE_NaN"
    assert coder.features(ROWS.rename(columns={"text": "text_description"}))[0].startswith(
        "boulanger patisser"
    )


def test_temperature_calibration():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 5, size=2000)
    scores = rng.normal(size=(2000, 5))
    scores[np.arange(2000), truth] += 1.0
    # scores scaled by 10 are over-confident: the fitted temperature brings them back near 0.1
    assert 0.05 < fit_temperature(scores * 10, truth) < 0.2
    assert softmax(np.zeros((1, 4)))[0].tolist() == [0.25] * 4


def test_metrics_on_a_known_case(naf2008):
    truth = ["10.71C", "10.71C", "56.10A", "56.10C"]
    predictions = pd.DataFrame(
        {
            "code_1": ["10.71C", "10.71D", "56.10A", "56.10A"],
            "proba_1": [0.9, 0.6, 0.8, 0.5],
            "code_2": ["10.71D", "10.71C", "56.10C", "56.10C"],
            "proba_2": [0.05, 0.3, 0.1, 0.4],
            "ic": [0.85, 0.3, 0.7, 0.1],
        }
    )
    for level in naf2008.levels:
        predictions[level] = [naf2008.ancestor_at(c, level) for c in predictions["code_1"]]
    evaluation = evaluate_predictions(predictions, truth, naf2008)
    metrics = evaluation.metrics
    assert metrics["accuracy"] == 0.5
    assert metrics["accuracy_class"] == 1.0 and metrics["accuracy_section"] == 1.0
    assert metrics["coverage_at_90"] == 0.5 and metrics["threshold_at_90"] == 0.7
    per_code = evaluation.per_code.set_index("code")
    assert per_code.loc["10.71C", "n"] == 2 and per_code.loc["10.71C", "accuracy"] == 0.5


def test_curve_coverage_and_calibration_error():
    ic = np.array([0.9, 0.8, 0.5, 0.2])
    correct = np.array([True, True, False, True])
    assert largest_coverage(ic, correct, 0.9) == (0.5, 0.8)
    assert largest_coverage(ic, ~correct, 0.9) == (0.0, 1.0)
    curve = automatic_coding_curve(ic, correct)
    assert curve.loc[curve["threshold"] == 0.0, "coverage"].item() == 1.0
    assert curve.loc[curve["threshold"] == 0.0, "accuracy"].item() == 0.75
    assert expected_calibration_error(np.array([1.0, 1.0]), np.array([True, True])) == 0.0
    assert expected_calibration_error(np.array([0.95]), np.array([False])) == 0.95


def test_figures_are_png(small_model, tmp_path):
    evaluation = small_model.evaluations["val"]
    paths = write_figures(evaluation, tmp_path, "(val)")
    names = sorted(p.name for p in paths)
    assert names == ["accuracy_per_section.png", "automatic_coding_curve.png", "ic_histogram.png"]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_code_written_in_the_text_is_mixed_in(small_model):
    coder = small_model.coder
    rows = pd.DataFrame({"text": ["restaurant traditionnel", "restaurant code APE 1052Z"]})
    coded = coder.predict(rows, k=2)
    assert coded.loc[0, "code_1"] != "10.52Z"
    assert coded.loc[1, "code_1"] == "10.52Z" and coded.loc[1, "proba_1"] >= 0.5
    np.testing.assert_allclose(coder.predict_proba(rows).sum(axis=1), 1.0, rtol=1e-4)
    # two different codes, or a code of another sub-tree: no mixing
    rows = pd.DataFrame({"text": ["1052Z ou 5610A", "code 6201Z", "depuis 2011 a Paris"]})
    proba = coder.predict_proba(rows)
    coder.code_mention_weight = 0.0
    try:
        np.testing.assert_allclose(coder.predict_proba(rows), proba, rtol=1e-6)
    finally:
        coder.code_mention_weight = 0.5
