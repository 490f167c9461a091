"""The nearest-descriptions member: it learns from descriptions only, votes by similarity, round
trips, and an ensemble without descriptions leaves it out."""

from typing import Any

import numpy as np
import pandas as pd

from autocode.model import Coder, EnsembleClassifier, NearestClassifier, load_coder, make_classifier

DESCRIPTIONS = pd.DataFrame(
    {
        "text": [
            "Loueur meublé non professionnel",
            "location meublée non professionnelle d'un appartement",
            "Boulangerie pâtisserie artisanale",
            "fabrication de pain et viennoiseries",
            "restaurant traditionnel",
            "restauration assise service à table",
        ],
        "code": ["55.20Z", "55.20Z", "10.71C", "10.71C", "56.10A", "56.10A"],
        "source": ["shop"] * 6,
    }
)


def _table(cold_start):
    return pd.concat([cold_start, DESCRIPTIONS], ignore_index=True)


def test_it_learns_from_descriptions_only(cold_start, naf2008):
    coder = Coder(NearestClassifier(), naf2008)
    table = _table(cold_start)
    inputs = coder.inputs(table)
    assert inputs.described is not None and sum(inputs.described) == len(DESCRIPTIONS)
    coder.classifier.fit(inputs, table["code"].tolist())
    assert coder.classifier.classes == ["10.71C", "55.20Z", "56.10A"]
    query = pd.DataFrame({"text": ["loueur en meublé non professionnel", "pain et viennoiserie"]})
    scores = coder.classifier.scores(coder.inputs(query))
    assert scores.shape == (2, 3)
    assert [coder.classifier.classes[i] for i in scores.argmax(axis=1)] == ["55.20Z", "10.71C"]
    # a vote is a cosine similarity: at most one per neighbour
    assert 0 < scores.max() <= coder.classifier.params["neighbours"]
    unrelated = coder.classifier.scores(coder.inputs(pd.DataFrame({"text": ["zzz qqq"]})))
    assert unrelated.max() == 0


def test_round_trip_and_an_ensemble_without_descriptions(cold_start, small_nomenclature, tmp_path):
    members: dict[str, dict[str, Any]] = {"tfidf": {}, "knn": {}}
    coder = Coder(make_classifier("ensemble", {"members": members}), small_nomenclature)
    assert isinstance(coder.classifier, EnsembleClassifier)
    coder.classifier.fit(coder.inputs(cold_start), cold_start["code"].tolist())
    knn = coder.classifier.members[1]
    assert knn.classes == []  # cold start: no description, no code
    alone = Coder(make_classifier("tfidf"), small_nomenclature)
    alone.classifier.fit(alone.inputs(cold_start), cold_start["code"].tolist())
    query = pd.DataFrame({"text": ["boulangerie", "friterie ambulante"]})
    np.testing.assert_allclose(
        coder.classifier.pool(coder.inputs(query))[0], alone.predict_proba(query), atol=1e-5
    )
    coder.save(tmp_path / "cold")
    cold = load_coder(str(tmp_path / "cold")).classifier
    assert isinstance(cold, EnsembleClassifier)
    assert cold.members[1].classes == []

    table = _table(cold_start)
    table = table[table["code"].isin(small_nomenclature.codes())]
    coder.classifier.fit(coder.inputs(table), table["code"].tolist())
    assert coder.classifier.members[1].classes == ["10.71C", "56.10A"]
    coder.save(tmp_path / "described")
    loaded = load_coder(str(tmp_path / "described"))
    np.testing.assert_allclose(loaded.predict_proba(query), coder.predict_proba(query), atol=1e-6)


def test_votes_are_the_nearest_cosines_summed_per_code(cold_start, naf2008):
    """The votes equal a brute-force reading of the dense similarity matrix (every row's
    `neighbours` largest cosines, summed per code), for a batch large enough to be split over
    threads; rows with a tie at the last neighbour are left out (either neighbour is right)."""
    from autocode.model import nearest

    described = cold_start.assign(source="shop")  # the notes' phrases read as descriptions
    knn = NearestClassifier(neighbours=5)
    coder = Coder(knn, naf2008)
    knn.fit(coder.inputs(described), described["code"].tolist())
    queries = cold_start["text"].sample(
        2 * nearest.ROWS_PER_THREAD + 7, replace=True, random_state=0
    )
    queries = [" ".join(reversed(t.split())) + " atelier" for t in queries]  # not the rows
    inputs = coder.inputs(pd.DataFrame({"text": queries}))
    assert nearest._threads(len(queries)) == min(2, nearest.available_cores())
    scores = knn.scores(inputs)

    assert knn._vectorizer is not None
    similarity = (knn._vectorizer.transform(inputs.tokens) @ knn._rows).toarray()
    order = np.sort(similarity, axis=1)[:, ::-1]
    untied = order[:, 4] > order[:, 5]
    assert untied.mean() > 0.9
    expected = np.zeros_like(scores)
    for row in np.flatnonzero(untied):
        for column in np.argsort(-similarity[row])[:5]:
            expected[row, knn._row_class[column]] += similarity[row, column]
    np.testing.assert_allclose(scores[untied], expected[untied], rtol=1e-5, atol=1e-6)


def test_a_pyfunc_with_the_member_requires_its_library(cold_start, small_nomenclature, tmp_path):
    """The MLflow model of a coder with the knn member lists sparse_dot_topn among its pip
    requirements (a serving image built from them must be able to load it)."""
    from autocode.model import save_pyfunc

    coder = Coder(
        make_classifier("ensemble", {"members": {"tfidf": {}, "knn": {}}}), small_nomenclature
    )
    table = _table(cold_start)
    table = table[table["code"].isin(small_nomenclature.codes())]
    coder.classifier.fit(coder.inputs(table), table["code"].tolist())
    path = save_pyfunc(coder, tmp_path / "model")
    assert "sparse-dot-topn==" in (path / "requirements.txt").read_text()
