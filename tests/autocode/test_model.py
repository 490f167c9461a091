import json

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
    EnsembleClassifier,
    FastTextClassifier,
    TfidfClassifier,
    fit_temperature,
    load_coder,
    make_classifier,
    softmax,
)

ROWS = pd.DataFrame(
    {
        "text": ["Boulangerie pâtisserie artisanale", "restaurant traditionnel", "FRITERIE"],
        "type_": ["C", "M", None],
    }
)


@pytest.mark.parametrize("kind", ["fasttext", "tfidf", "e5"])
def test_each_classifier_learns_and_round_trips(kind, cold_start, small_nomenclature, tmp_path):
    params = {"epoch": 60, "dim": 30, "thread": 1} if kind == "fasttext" else {}
    coder = Coder(make_classifier(kind, params), small_nomenclature)
    coder.classifier.fit(coder.inputs(cold_start), cold_start["code"].tolist())
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
    # its classes sorted, as the ensemble's: pooling adds its scores without reordering them
    assert model.classes == sorted(model.classes)


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


def test_a_large_batch_is_coded_in_chunks_as_one_batch(small_model, cold_start, monkeypatch):
    """Batches over `CHUNK_ROWS` rows are coded in chunks, in threads: same rows, same order,
    same codes, probabilities and decisions as one batch."""
    from autocode.model import coder as coder_module

    coder = small_model.coder
    frame = pd.DataFrame({"text": cold_start["text"].head(300).tolist() + ROWS["text"].tolist()})
    whole = coder.predict(frame, k=3, threshold=0.5)
    monkeypatch.setattr(coder_module, "CHUNK_ROWS", 16)
    chunked = coder.predict(frame, k=3, threshold=0.5)
    pd.testing.assert_frame_equal(chunked, whole)
    assert list(chunked.index) == list(range(len(frame)))


def test_models_predict_on_one_blas_thread_and_give_the_setting_back(
    small_model, cold_start, monkeypatch
):
    """OpenBLAS's idle workers spin at 100 % of a core between products: while a coder
    predicts, BLAS runs on the calling thread only, in the chunks' threads too, and nested
    uses keep it so; afterwards the library's own setting is back."""
    from threadpoolctl import threadpool_info

    from autocode.model import coder as coder_module
    from autocode.model.base import one_blas_thread

    def blas_threads() -> set[int]:
        return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    before = blas_threads()
    seen: list[set[int]] = []
    coder = small_model.coder
    original = coder.classifier.predict_proba

    def spying(inputs):
        seen.append(blas_threads())
        return original(inputs)

    monkeypatch.setattr(coder.classifier, "predict_proba", spying)
    monkeypatch.setattr(coder_module, "CHUNK_ROWS", 16)
    coder.predict(ROWS, k=2)  # one chunk, on this thread
    coder.predict(pd.DataFrame({"text": cold_start["text"].head(100)}), k=2)  # 7 in threads
    assert len(seen) == 8 and all(s == {1} for s in seen), seen
    with one_blas_thread(), one_blas_thread():
        assert blas_threads() == {1}
    assert blas_threads() == before


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


def test_ic_is_p1_minus_p2_whatever_k(small_model):
    coder = small_model.coder
    proba = coder.predict_proba(ROWS)
    best_two = -np.sort(-proba, axis=1)[:, :2].astype(np.float64)
    for k in (1, 2, 5):
        coded = coder.format(proba, k=k, threshold=0.5)
        np.testing.assert_allclose(coded["ic"], best_two[:, 0] - best_two[:, 1], atol=1e-7)
        assert (coded["auto"] == (coded["ic"] >= 0.5)).all()
        assert [c for c in coded.columns if c.startswith("code_")] == [
            f"code_{r + 1}" for r in range(k)
        ]
    assert coder.predict(ROWS, k=1)["ic"].tolist() == coder.predict(ROWS, k=3)["ic"].tolist()


def test_ic_of_a_single_class_model_is_p1(small_nomenclature):
    coder = Coder(TfidfClassifier(), small_nomenclature)
    coder.classifier.classes = ["10.71C"]
    coded = coder.format(np.ones((2, 1), dtype=np.float32), k=3)
    assert coded["ic"].tolist() == [1.0, 1.0] and list(coded["code_1"]) == ["10.71C"] * 2


@pytest.mark.parametrize("bucket", [1, 10, 100])
def test_fasttext_with_a_small_bucket_has_finite_weights(bucket, cold_start):
    # fastText initialises only part of its input matrix; small matrices used to get recycled
    # heap bytes (1e35, NaN): "Encountered NaN" at any lr, or NaN probabilities.
    model = FastTextClassifier(epoch=5, dim=10, thread=1, bucket=bucket, wordNgrams=1)
    model.fit(cold_start["text"], cold_start["code"])
    assert model.params["lr"] == 0.5  # no divergence, no retry with a lower lr
    weights = model._model.get_input_matrix()
    assert np.isfinite(weights).all() and np.abs(weights).max() < 100
    proba = model.predict_proba(["boulangerie", "zzzqqq inconnu", "restaurant rapide", ""])
    assert np.isfinite(proba).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-4)


def test_fasttext_without_words_or_subwords_trains(cold_start):
    # wordNgrams=1 and maxn=0: fastText sets bucket=0 and its whole matrix is small
    model = FastTextClassifier(epoch=5, dim=10, thread=2, wordNgrams=1, minn=0, maxn=0)
    model.fit(cold_start["text"], cold_start["code"])
    assert model.params["lr"] == 0.5
    assert np.isfinite(model.predict_proba(["boulangerie artisanale"])).all()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"bucket": 0, "wordNgrams": 2}, "bucket=0"),
        ({"bucket": 0, "wordNgrams": 1, "minn": 3, "maxn": 6}, "bucket=0"),
        ({"bucket": -1}, "bucket"),
        ({"dim": 0}, "dim"),
    ],
)
def test_fasttext_parameters_that_crash_are_refused(params, message, cold_start):
    # bucket=0 with hashed n-grams used to kill the whole process (SIGFPE)
    with pytest.raises(ValueError, match=message):
        FastTextClassifier(epoch=1, thread=1, **params).fit(cold_start["text"], cold_start["code"])


def test_tfidf_weights_are_stored_sparse_and_predict_like_sklearn(cold_start, tmp_path):
    import pickle

    from sklearn.svm import LinearSVC

    texts, codes = cold_start["text"].tolist(), cold_start["code"].tolist()
    exact = TfidfClassifier(coef_prune=0.0).fit(texts, codes)
    union = _sklearn_union(exact.params, texts)
    features = union.transform(texts)
    p = exact.params
    svm = LinearSVC(C=p["C"], class_weight=p["class_weight"], random_state=0)
    svm.fit(features, codes)
    dense = svm.decision_function(features)
    np.testing.assert_allclose(exact.scores(texts), dense, atol=1e-5)
    assert exact._coef.dtype == np.float32 and exact._coef.format == "csr"
    assert abs(exact._coef.nnz - np.count_nonzero(svm.coef_)) < 0.01 * svm.coef_.size

    pruned = TfidfClassifier().fit(texts, codes)  # default coef_prune
    assert pruned._coef.nnz < exact._coef.nnz
    assert np.abs(pruned.predict_proba(texts) - exact.predict_proba(texts)).max() < 1e-3
    assert (pruned.scores(texts).argmax(axis=1) == dense.argmax(axis=1)).all()

    pruned.save(tmp_path)
    assert not list(tmp_path.glob("*.pkl"))  # no pickle: JSON vocabularies, .npy, .npz
    again = TfidfClassifier.load(tmp_path, pruned.meta())
    np.testing.assert_array_equal(again.scores(texts), pruned.scores(texts))

    # a model directory of format 1 (vectorizer and LinearSVC pickled) still loads
    old = tmp_path / "format1"
    old.mkdir()
    with (old / "tfidf.pkl").open("wb") as handle:
        pickle.dump((union, svm), handle)
    loaded = TfidfClassifier.load(old, exact.meta())
    np.testing.assert_allclose(loaded.scores(texts), dense, atol=1e-5)


def test_source_weights_reach_the_tfidf_model(cold_start):
    from autocode.train import ConfigError, row_weights

    weights = row_weights(cold_start, {"label_subclass": 2.0})
    is_label = (cold_start["source"] == "label_subclass").to_numpy()
    assert is_label.any() and np.array_equal(np.asarray(weights), np.where(is_label, 2.0, 1.0))
    assert row_weights(cold_start, {}) is None and row_weights(cold_start, {"nope": 3}) is None
    with pytest.raises(ConfigError, match=r"source_weights\.label_subclass"):
        row_weights(cold_start, {"label_subclass": 0})

    texts, codes = cold_start["text"].tolist(), cold_start["code"].tolist()
    plain = TfidfClassifier().fit(texts, codes)
    ones = TfidfClassifier().fit(texts, codes, [1.0] * len(texts))
    np.testing.assert_allclose(ones.scores(texts), plain.scores(texts), atol=1e-5)
    heavy = TfidfClassifier().fit(texts, codes, weights)
    labels = [t for t, label in zip(texts, is_label, strict=True) if label]
    truth = [plain.classes.index(c) for c, label in zip(codes, is_label, strict=True) if label]
    rows = np.arange(len(labels))
    assert heavy.scores(labels)[rows, truth].mean() > plain.scores(labels)[rows, truth].mean()


def _sklearn_union(params, texts):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_union

    return make_union(
        TfidfVectorizer(ngram_range=(1, params["word_ngram_max"]), sublinear_tf=True),
        TfidfVectorizer(
            analyzer=params["char_analyzer"],
            ngram_range=(params["char_ngram_min"], params["char_ngram_max"]),
            sublinear_tf=True,
            min_df=params["char_min_df"],
            dtype=np.float32,
        ),
    ).fit(texts)


@pytest.mark.parametrize("analyzer", ["char_wb", "char"])
def test_tfidf_features_are_sklearns(analyzer, cold_start):
    from autocode.model import TfidfFeatures

    texts = cold_start["text"].tolist()
    params = {**TfidfClassifier.default_params(), "char_analyzer": analyzer}
    union = _sklearn_union(params, texts)
    odd = ["", "a", "ab", "x  y   z", "été à Noël", "l'œuvre", "CAPS Mixed", "a b c", "12 3"]
    mine = TfidfFeatures.from_sklearn(union)
    for batch in (texts, odd):
        expected = union.transform(batch)
        got = mine.transform(batch)
        assert got.shape == expected.shape and abs(got - expected).max() < 1e-6


def test_a_saved_tfidf_model_predicts_without_sklearn(small_model, tmp_path):
    import subprocess
    import sys

    path = small_model.coder.save(tmp_path / "coder")
    code = (
        "import sys; from autocode.model import load_coder; "
        f"c = load_coder({str(path)!r}); c.predict_proba(__import__('pandas')."
        "DataFrame({'text': ['boulangerie']})); print(sorted(m for m in sys.modules "
        "if m.split('.')[0] == 'sklearn'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_with_confidence_sets_ic_and_keeps_the_order():
    from autocode.model import MIN_CONFIDENCE, with_confidence

    rng = np.random.default_rng(1)
    proba = softmax(rng.normal(size=(50, 7)) * 3)
    proba[0] = [1, 0, 0, 0, 0, 0, 0]  # all the mass on one code
    proba[1] = [0.2, 0.5, 0.1, 0.1, 0.05, 0.05, 0.0]
    ic = rng.uniform(0, 1, size=50)
    ic[1] = 0.0  # floored: the first code stays strictly first
    out = with_confidence(proba, ic).astype(np.float64)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)  # float32
    assert (out >= 0).all()
    best_two = -np.sort(-out, axis=1)[:, :2]
    np.testing.assert_allclose(
        best_two[:, 0] - best_two[:, 1], np.maximum(ic, MIN_CONFIDENCE), atol=1e-6
    )
    assert (out.argmax(axis=1) == proba.argmax(axis=1)).all()
    # every code but the first keeps its rank (ties excepted)
    for row in range(2, 50):
        np.testing.assert_array_equal(np.argsort(-out[row]), np.argsort(-proba[row]))


def test_margin_at_is_the_members_margin_for_a_given_code():
    from autocode.model import margin_at

    proba = np.array([[0.6, 0.3, 0.1], [0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
    np.testing.assert_allclose(margin_at(proba, np.array([0, 1, 2])), [0.3, 0.0, 0.4])


def test_ensemble_ic_is_the_confidence_members_margin(cold_start, small_nomenclature, tmp_path):
    from autocode.model import margin_at

    ensemble = make_classifier(
        "ensemble", {"members": {"fasttext": {"epoch": 20, "dim": 10, "thread": 1}, "tfidf": {}}}
    )
    assert isinstance(ensemble, EnsembleClassifier)
    assert ensemble.confidence == "tfidf"  # the default
    coder = Coder(ensemble, small_nomenclature)
    coder.classifier.fit(coder.features(cold_start), cold_start["code"].tolist())
    texts = coder.features(pd.DataFrame({"text": ["boulangerie", "pizzeria", "plats cuisinés"]}))
    confident = coder.classifier.predict_proba(texts)
    ensemble.confidence = None
    mean = coder.classifier.predict_proba(texts)
    tfidf = ensemble.members[1].predict_proba(texts)
    assert (confident.argmax(axis=1) == mean.argmax(axis=1)).all()
    best_two = -np.sort(-confident, axis=1)[:, :2]
    expected = np.maximum(margin_at(tfidf, mean.argmax(axis=1)), 1e-4)
    np.testing.assert_allclose(best_two[:, 0] - best_two[:, 1], expected, atol=1e-5)
    assert not np.allclose(confident, mean, atol=1e-3)
    # saved and loaded with its confidence member; a model saved without one keeps the mean
    ensemble.confidence = "tfidf"
    coder.save(tmp_path / "coder")
    np.testing.assert_allclose(
        load_coder(tmp_path / "coder").classifier.predict_proba(texts), confident, atol=1e-6
    )
    # a model saved before `confidence` and `pooling` existed: the plain weighted mean
    meta_path = tmp_path / "coder" / "coder.json"
    meta = json.loads(meta_path.read_text())
    del meta["classifier"]["confidence"], meta["classifier"]["pooling"]
    meta_path.write_text(json.dumps(meta))
    old = load_coder(tmp_path / "coder").classifier
    assert isinstance(old, EnsembleClassifier) and old.confidence is None
    assert old.pooling == "mean"
    plain = sum(
        w * m.predict_proba(texts)[:, [m.classes.index(c) for c in old.classes]]
        for w, m in zip(old.weights, old.members, strict=True)
    )
    np.testing.assert_allclose(old.predict_proba(texts), plain, atol=1e-6)


def test_geometric_pooling_is_the_normalised_weighted_geometric_mean(cold_start):
    ensemble = make_classifier(
        "ensemble",
        {
            "members": {"fasttext": {"epoch": 20, "dim": 10, "thread": 1}, "tfidf": {}},
            "pooling": "geometric",
        },
    )
    assert isinstance(ensemble, EnsembleClassifier)
    assert ensemble.weights == pytest.approx([0.3, 0.7])  # the members' geometric_weight
    ensemble.fit(cold_start["text"], cold_start["code"])
    ensemble.confidence = None
    texts = ["boulangerie", "pizzeria", "plats cuisines"]
    members = []
    for member in ensemble.members:
        columns = [member.classes.index(c) for c in ensemble.classes]
        members.append(member.predict_proba(texts)[:, columns].astype(np.float64))
    expected = members[0] ** 0.3 * members[1] ** 0.7
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(ensemble.predict_proba(texts), expected, rtol=1e-4, atol=1e-6)
    ensemble.pooling = "mean"
    mean = 0.3 * members[0] + 0.7 * members[1]
    np.testing.assert_allclose(ensemble.predict_proba(texts), mean, rtol=1e-4, atol=1e-6)
    default = make_classifier("ensemble", {})
    assert isinstance(default, EnsembleClassifier)
    assert default.pooling == "mean"  # fastText 0.2, TF-IDF 0.8 and knn 1.0, normalised
    assert default.weights == pytest.approx([0.1, 0.4, 0.5])


def test_an_unknown_confidence_member_is_refused(small_nomenclature):
    from autocode.train import ConfigError, TrainConfig, build_coder

    with pytest.raises(ValueError, match="not a member"):
        make_classifier("ensemble", {"members": {"tfidf": {}}, "confidence": "fasttext"})
    with pytest.raises(ValueError, match="pooling 'median'"):
        make_classifier("ensemble", {"pooling": "median"})
    none = make_classifier("ensemble", {"confidence": None})
    fasttext_only = make_classifier("ensemble", {"members": {"fasttext": {}}})
    assert isinstance(none, EnsembleClassifier) and isinstance(fasttext_only, EnsembleClassifier)
    assert none.confidence is None
    assert fasttext_only.confidence is None
    config = TrainConfig.from_dict({"params": {"confidence": "bert"}})
    with pytest.raises(ConfigError, match="params: ensemble confidence 'bert'"):
        build_coder(config, small_nomenclature)


def test_confidence_scale_is_a_logistic_fit_that_never_reverses_the_order():
    from autocode.model import fit_confidence_scale

    rng = np.random.default_rng(0)
    margin = rng.uniform(0, 1, size=4000)
    truth = 1 / (1 + np.exp(-(4 * margin - 2)))
    correct = rng.uniform(size=4000) < truth
    scale = fit_confidence_scale(margin, correct)
    assert scale is not None
    a, b = scale
    assert a == pytest.approx(4, abs=0.5) and b == pytest.approx(-2, abs=0.3)
    assert fit_confidence_scale(margin, np.ones(4000, dtype=bool)) is None  # nothing to rank
    assert fit_confidence_scale(margin, margin < 0.5) is None  # a < 0: refused


def test_training_can_calibrate_the_ic_on_the_validation_rows(
    cold_start, small_nomenclature, tmp_path
):
    from autocode.train import TrainConfig, fit_coder

    config = TrainConfig.from_dict(
        {
            "params": {"members": {"fasttext": {"epoch": 20, "dim": 10, "thread": 1}, "tfidf": {}}},
            "calibrate_confidence": True,
        }
    )
    coder, _, _ = fit_coder(config, small_nomenclature, cold_start)
    ensemble = coder.classifier
    assert isinstance(ensemble, EnsembleClassifier)
    assert ensemble.confidence == "tfidf"
    assert ensemble.confidence_scale is not None and ensemble.confidence_scale[0] > 0
    proba = coder.predict_proba(ROWS)
    texts = coder.features(ROWS)
    pooled, margin = ensemble.pool(texts)
    assert margin is not None  # the ensemble has a confidence member
    a, b = ensemble.confidence_scale
    expected = 1 / (1 + np.exp(-(a * margin + b)))
    best_two = -np.sort(-proba, axis=1)[:, :2]
    np.testing.assert_allclose(best_two[:, 0] - best_two[:, 1], expected, atol=1e-5)
    assert (proba.argmax(axis=1) == pooled.argmax(axis=1)).all()
    coder.save(tmp_path / "coder")
    again = load_coder(tmp_path / "coder")
    assert isinstance(again.classifier, EnsembleClassifier)
    assert again.classifier.confidence_scale == pytest.approx(ensemble.confidence_scale)
    np.testing.assert_allclose(again.predict_proba(ROWS), proba, atol=1e-6)


def test_calibrate_confidence_false_keeps_the_members_margin(cold_start, small_nomenclature):
    from autocode.model import margin_at
    from autocode.train import TrainConfig, fit_coder

    config = TrainConfig.from_dict(
        {
            "params": {"members": {"fasttext": {"epoch": 20, "dim": 10, "thread": 1}, "tfidf": {}}},
            "calibrate_confidence": False,
        }
    )
    coder, _, _ = fit_coder(config, small_nomenclature, cold_start)
    ensemble = coder.classifier
    assert isinstance(ensemble, EnsembleClassifier)
    assert ensemble.confidence == "tfidf" and ensemble.confidence_scale is None
    texts = coder.features(ROWS)
    pooled, margin = ensemble.pool(texts)
    assert margin is not None  # the ensemble has a confidence member
    tfidf = ensemble.members[1].predict_proba(texts)
    tfidf = tfidf[:, [ensemble.members[1].classes.index(c) for c in ensemble.classes]]
    np.testing.assert_allclose(margin, margin_at(tfidf, pooled.argmax(axis=1)), atol=1e-6)
    best_two = -np.sort(-ensemble.predict_proba(texts), axis=1)[:, :2]
    np.testing.assert_allclose(best_two[:, 0] - best_two[:, 1], np.maximum(margin, 1e-4), atol=1e-5)


def test_the_automatic_threshold_is_chosen_on_the_validation_descriptions(
    cold_start, small_nomenclature
):
    """``threshold: auto`` (default): the smallest IC at which the validation rows that are
    descriptions (rows of the ``train`` datasets, not notes phrases) coded automatically are
    90 % right with one more error counted; the model keeps it, codes with it, and says in its
    info what it rests on."""
    from autocode.evaluate import largest_coverage
    from autocode.train import TrainConfig, evaluate_coder, fit_coder, split_validation

    labels = cold_start[cold_start["source"] == "label_subclass"]
    shop = pd.concat(  # rows of a `train` dataset: descriptions written around the labels
        [labels.assign(text=[p.format(t) for t in labels["text"]]) for p in PATTERNS],
        ignore_index=True,
    ).assign(source="shop")
    table = pd.concat([cold_start, shop], ignore_index=True)
    members = {"fasttext": {"epoch": 20, "dim": 10, "thread": 1}, "tfidf": {}}
    config = TrainConfig.from_dict(
        {
            "params": {"members": members},
            "train": [{"uri": "s3://bucket/shop.csv"}],
            "validation_fraction": 0.1,
            "description_validation_fraction": 0.3,
            "refit": False,
        }
    )
    coder, validation, _ = fit_coder(config, small_nomenclature, table)
    assert validation is not None
    _, val_rows = split_validation(table, 0.1, config.seed, 0.3)
    described = val_rows[val_rows["source"] == "shop"]
    assert 20 <= len(described) < len(val_rows)
    assert len(described) == round(0.3 * (table["source"] == "shop").sum())
    predictions = evaluate_coder(coder, described).predictions
    correct = (predictions["code_1"] == predictions["truth"]).to_numpy()
    ic = predictions["ic"].to_numpy()
    coverage, expected = largest_coverage(ic, correct, 0.90, guard=1)
    assert coverage > 0 and coder.threshold == expected
    automatic = ic >= coder.threshold
    assert correct[automatic].sum() / (automatic.sum() + 1) >= 0.90
    basis = coder.info["threshold_basis"]
    assert basis["rule"] == "held-out descriptions" and basis["descriptions"] == len(described)
    assert basis["automatic"] == automatic.sum()
    low, high = basis["accuracy_interval"]
    assert low <= basis["accuracy"] <= high
    auto = validation.predictions
    assert (auto["auto"] == (auto["ic"] >= coder.threshold)).all()  # all validation rows


PATTERNS = ("{}", "{} artisanal", "activité de {}", "{} en ligne", "société de {}")


def test_without_validation_descriptions_nothing_is_automatic(small_model):
    """Cold start: the validation rows are notes phrases, not descriptions, so the model cannot
    know its accuracy on descriptions: nothing is automatic, and its info says why. A configured
    threshold is kept as it is."""
    from autocode.train import NO_AUTOMATIC_CODING, TrainConfig, threshold_for

    assert small_model.coder.threshold == NO_AUTOMATIC_CODING > 1
    basis = small_model.coder.info["threshold_basis"]
    assert basis["rule"] == "cold start" and basis["descriptions"] == 0
    assert "nothing is automatic" in basis["note"]
    assert not small_model.evaluations["val"].predictions["auto"].any()
    assert small_model.metrics["val_coverage_at_90"] > 0  # on the notes phrases, unused
    saved = json.loads((small_model.output / "artifacts" / "coder" / "coder.json").read_text())
    assert saved["info"]["threshold_basis"] == basis
    fixed = TrainConfig.from_dict({"threshold": 0.4})
    assert threshold_for(fixed, small_model.coder, config_rows(), None) == (
        0.4,
        {"rule": "configured", "target_accuracy": 0.9},
    )


def test_the_default_model_is_fast_and_learns_from_descriptions(small_nomenclature):
    """The default ensemble: fastText, TF-IDF (its margin is the IC) and the nearest
    descriptions; no e5 member (70 texts/s: docs/autocode.md, "Speed")."""
    from autocode.train import TrainConfig, build_coder

    default = build_coder(TrainConfig(), small_nomenclature)
    assert isinstance(default.classifier, EnsembleClassifier)
    assert [m.kind for m in default.classifier.members] == ["fasttext", "tfidf", "knn"]
    assert default.classifier.confidence == "tfidf"


def test_no_threshold_reaching_the_target_means_nothing_automatic(cold_start, small_nomenclature):
    """Descriptions whose codes the model gets wrong: no IC reaches 90 %, nothing is automatic
    (the fallback of 0.15 used to code them anyway)."""
    from autocode.train import NO_AUTOMATIC_CODING, TrainConfig, fit_coder

    table = cold_start.copy()
    shop = table.index % 2 == 0
    table.loc[shop, "source"] = "shop"
    # descriptions labelled at random: no model can be 90 % right on them
    codes = sorted(set(table["code"]))
    table.loc[shop, "code"] = np.random.default_rng(0).choice(codes, int(shop.sum()))
    config = TrainConfig.from_dict(
        {
            "model": "tfidf",
            "train": [{"uri": "s3://bucket/shop.csv"}],
            "description_validation_fraction": 0.3,
            "refit": False,
        }
    )
    coder, _, _ = fit_coder(config, small_nomenclature, table)
    assert coder.threshold == NO_AUTOMATIC_CODING
    assert "nothing is automatic" in coder.info["threshold_basis"]["note"]


def config_rows():
    return pd.DataFrame({"text": [], "code": [], "source": []})


def test_a_configured_threshold_is_kept_and_a_bad_one_refused(cold_start, small_nomenclature):
    from autocode.train import ConfigError, TrainConfig, fit_coder

    members = {"fasttext": {"epoch": 5, "dim": 10, "thread": 1}, "tfidf": {}}
    config = TrainConfig.from_dict({"params": {"members": members}, "threshold": 0.55})
    coder, _, _ = fit_coder(config, small_nomenclature, cold_start)
    assert coder.threshold == 0.55
    with pytest.raises(ConfigError, match="threshold: a number from 0 to 1, or auto"):
        TrainConfig.from_dict({"threshold": "high"})
    with pytest.raises(ConfigError, match="target_accuracy: choose from"):
        TrainConfig.from_dict({"target_accuracy": 0.8})
