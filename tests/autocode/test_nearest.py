"""The nearest-descriptions member: it learns from descriptions only, votes by similarity, round
trips, and an ensemble without descriptions leaves it out."""

import numpy as np
import pandas as pd

from autocode.model import Coder, NearestClassifier, load_coder, make_classifier

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
    members = {"tfidf": {}, "knn": {}}
    coder = Coder(make_classifier("ensemble", {"members": members}), small_nomenclature)
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
    assert load_coder(str(tmp_path / "cold")).classifier.members[1].classes == []

    table = _table(cold_start)
    table = table[table["code"].isin(small_nomenclature.codes())]
    coder.classifier.fit(coder.inputs(table), table["code"].tolist())
    assert coder.classifier.members[1].classes == ["10.71C", "56.10A"]
    coder.save(tmp_path / "described")
    loaded = load_coder(str(tmp_path / "described"))
    np.testing.assert_allclose(loaded.predict_proba(query), coder.predict_proba(query), atol=1e-6)
