"""autocode throughput: preprocessing, fastText training on 100k rows, batch coding through the
MLflow pyfunc (the default model, and fastText and TF-IDF alone), sentence embeddings (the e5
member).

Targets (2 cores): preprocessing ≥ 50k texts/s, fastText training on 100k rows ≤ 60 s, batch
prediction of the default model (`bench.autocode_models`) through the MLflow pyfunc ≥ 10k
texts/s, with register variables (those of dev1000's rows, drawn at random, when this machine
has it). Data: the cold-start set of NAF rév. 2
(from ``$AUTOCODE_NOMENCLATURES`` or ``../shared/data/nomenclatures``), resampled with word
dropout to 100k distinct-ish rows so that the numbers do not depend on a private data set.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

TRAIN_ROWS = 100_000
PREDICT_ROWS = 50_000


def _rows(n: int, seed: int = 0) -> pd.DataFrame:
    from autocode.data import build_cold_start
    from autocode.nomenclature import load_naf2008, load_notes_fr

    nomenclature, notes = load_naf2008(), load_notes_fr()
    base = build_cold_start(nomenclature, notes)
    rng = np.random.default_rng(seed)
    picks = base.iloc[rng.integers(0, len(base), size=n)].reset_index(drop=True)
    texts = []
    for text in picks["text"]:
        words = text.split()
        keep = rng.random(len(words)) > 0.2
        texts.append(" ".join(w for w, k in zip(words, keep, strict=True) if k) or text)
    return pd.DataFrame({"text": texts, "code": picks["code"]}), nomenclature


def _tfidf_model(nomenclature, batch: pd.DataFrame) -> dict:
    """The cold-start TF-IDF member (default parameters, all 732 subclasses): size of its pyfunc
    directory, loading time and batch prediction rate (its weights are stored sparse)."""
    import mlflow.pyfunc

    from autocode.data import build_cold_start
    from autocode.model import Coder, TfidfClassifier, save_pyfunc
    from autocode.nomenclature import load_notes_fr

    table = build_cold_start(nomenclature, load_notes_fr())
    coder = Coder(TfidfClassifier(), nomenclature)
    coder.classifier.fit(coder.inputs(table), table["code"].tolist())
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = save_pyfunc(coder, Path(tmp) / "model")
        out["tfidf_model_mb"] = round(
            sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6, 1
        )
        started = time.perf_counter()
        model = mlflow.pyfunc.load_model(str(path))
        out["tfidf_pyfunc_load_s"] = round(time.perf_counter() - started, 2)
        model.predict(batch.head(100))
        started = time.perf_counter()
        model.predict(batch, params={"k": 5})
        out["tfidf_pyfunc_predict_texts_per_s"] = round(
            len(batch) / (time.perf_counter() - started)
        )
    return out


E5_ROWS = 1_000


def _e5_rate(batch: pd.DataFrame) -> dict:
    """Sentence embeddings per second (multilingual-e5-small, no cache): what bounds the rate
    of the default model (fastText + TF-IDF + e5), whose other members are 40-100x faster."""
    from autocode.embedding import SentenceEncoder

    encoder = SentenceEncoder()  # a fresh cache and no disk cache: every text is embedded
    texts = batch["text"].drop_duplicates().head(E5_ROWS).tolist()
    encoder.embed(texts[:10], "query")  # load the engine
    started = time.perf_counter()
    encoder.embed(texts[10:], "query")
    return {"e5_embed_texts_per_s": round((len(texts) - 10) / (time.perf_counter() - started))}


def _default_model_rate(batch: pd.DataFrame) -> dict:
    """The default model's batch rate through the MLflow pyfunc, as ``autocode predict`` and a
    served batch code (each row with the register variables of a random dev1000 row)."""
    import mlflow.pyfunc

    from bench.autocode_models import DEV1000, default_model

    path, trained_on = default_model()
    if DEV1000.is_file():
        from autocode.model import REGISTER_VARIABLES

        register = pd.read_csv(DEV1000, usecols=list(REGISTER_VARIABLES), dtype=str)
        picks = np.random.default_rng(1).integers(0, len(register), size=len(batch))
        batch = pd.concat(
            [batch.reset_index(drop=True), register.iloc[picks].reset_index(drop=True)], axis=1
        )
    model = mlflow.pyfunc.load_model(str(path))
    model.predict(batch.head(100))
    rates = []
    for _ in range(3):
        started = time.perf_counter()
        coded = model.predict(batch, params={"k": 5})
        rates.append(len(batch) / (time.perf_counter() - started))
    assert len(coded) == len(batch)
    return {
        "default_model": trained_on,
        # the median of 3 passes (the machine's other work weighs on single passes)
        "pyfunc_predict_texts_per_s": round(sorted(rates)[1]),
    }


def run() -> dict:
    import mlflow.pyfunc

    from autocode.model import Coder, FastTextClassifier, save_pyfunc
    from autocode.preprocess import Preprocessor

    rows, nomenclature = _rows(TRAIN_ROWS)
    results: dict = {"train_rows": TRAIN_ROWS, "predict_rows": PREDICT_ROWS}

    clean = Preprocessor()
    clean(rows["text"].head(1000).tolist())  # build the translation table once
    started = time.perf_counter()
    features = clean(rows["text"].tolist())
    elapsed = time.perf_counter() - started
    results["preprocess_texts_per_s"] = round(TRAIN_ROWS / elapsed)

    # the default fastText parameters of the cold-start model, but 10 epochs: 100k rows
    # of real data need far fewer passes than the 7k-row cold-start set
    classifier = FastTextClassifier(epoch=10, thread=2)
    started = time.perf_counter()
    classifier.fit(features, rows["code"].tolist())
    results["fasttext_train_100k_s"] = round(time.perf_counter() - started, 2)
    results["fasttext_params"] = {k: v for k, v in classifier.params.items() if k != "bucket"}

    coder = Coder(classifier, nomenclature)
    batch = rows.head(PREDICT_ROWS)[["text"]]
    with tempfile.TemporaryDirectory() as tmp:
        path = save_pyfunc(coder, Path(tmp) / "model")
        model = mlflow.pyfunc.load_model(str(path))
        model.predict(batch.head(100))
        started = time.perf_counter()
        coded = model.predict(batch, params={"k": 5})
        elapsed = time.perf_counter() - started
    assert len(coded) == PREDICT_ROWS
    results["fasttext_pyfunc_predict_texts_per_s"] = round(PREDICT_ROWS / elapsed)
    results.update(_tfidf_model(nomenclature, batch))
    results.update(_default_model_rate(batch))
    results.update(_e5_rate(batch))
    results["targets_met"] = {
        "preprocess_ge_50k_per_s": results["preprocess_texts_per_s"] >= 50_000,
        "train_100k_le_60s": results["fasttext_train_100k_s"] <= 60,
        "predict_ge_10k_per_s": results["pyfunc_predict_texts_per_s"] >= 10_000,
    }
    return results
