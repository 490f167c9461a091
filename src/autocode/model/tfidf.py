"""The TF-IDF member: word and character n-gram TF-IDF, a linear SVM, and the sklearn-free
feature extraction used at prediction time (`TfidfFeatures`)."""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from autocode.model.base import Classifier, Texts


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
        scores = np.asarray(features @ self._weights_t) + self._intercept
        if scores.shape[1] == 1:  # two classes: sklearn keeps one row of weights
            scores = np.hstack([-scores, scores])
        return np.asarray(scores, dtype=np.float32)

    def _set_weights(self, coef, intercept: np.ndarray) -> None:
        # Dense float32 in memory (half of sklearn's float64): a sparse-times-dense product is
        # ~6x faster than sparse-times-sparse here (the scores are dense anyway); sparse on disk.
        # Stored features × classes, C-contiguous: scipy's sparse-times-dense product flattens
        # its dense operand in C order, so the transpose of a classes × features matrix was
        # copied whole (tens of MB) at every call, most of a single prediction's time.
        # Made dense from the transpose as CSR, which writes C order directly (the CSC view's
        # toarray then a C copy took 1.7 s of a 2 s model load; this 0.07 s).
        import scipy.sparse

        self._weights_t = scipy.sparse.csr_matrix(coef.T, dtype=np.float32).toarray()
        self._intercept = np.asarray(intercept, dtype=np.float32)

    @property
    def _coef(self):
        """The weights as stored: float32 CSR (classes × features), zeros (and pruned weights)
        left out."""
        import scipy.sparse

        return scipy.sparse.csr_matrix(self._weights_t.T)

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
    _words: dict[str, list[int]]  # word -> its columns (`_word_columns`), from the first transform

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

    #: Words whose ``char_wb`` n-gram columns are remembered (`_word_columns`); past it, the
    #: memory starts again empty.
    WORD_CACHE_SIZE = 200_000

    def _word_columns(self, word: str) -> list[int]:
        """The vocabulary columns of the ``char_wb`` n-grams of one (lower-cased) word, with
        repeats. Words recur across descriptions, so each is cut into n-grams once: ~5x faster
        than cutting every text (the n-grams of one text were most of a prediction's time)."""
        columns = self._words.get(word)
        if columns is None:
            vocabulary = self.vocabulary_
            padded = f" {word} "
            columns = []
            low, high = self.ngram_range
            for n in range(low, high + 1):
                if len(padded) <= n:  # a word shorter than n counts once, whole
                    j = vocabulary.get(padded)
                    if j is not None:
                        columns.append(j)
                    break
                for i in range(len(padded) - n + 1):
                    j = vocabulary.get(padded[i : i + n])
                    if j is not None:
                        columns.append(j)
            if len(self._words) >= self.WORD_CACHE_SIZE:
                self._words = {}
            self._words[word] = columns
        return columns

    def transform(self, texts: Sequence[str]):
        import scipy.sparse

        indptr, indices = [0], []
        if self.analyzer == "char_wb":
            if not hasattr(self, "_words"):
                self._words = {}
            for text in texts:
                for word in text.lower().split():
                    indices.extend(self._word_columns(word))
                indptr.append(len(indices))
        else:
            vocabulary = self.vocabulary_
            for text in texts:
                for gram in self.ngrams(text):
                    j = vocabulary.get(gram)
                    if j is not None:
                        indices.append(j)
                indptr.append(len(indices))
        shape = (len(indptr) - 1, len(self.idf_))
        ones = np.ones(len(indices), dtype=np.float64)
        matrix = scipy.sparse.csr_matrix(
            (ones, np.asarray(indices, dtype=np.int32), np.asarray(indptr)), shape=shape
        )
        matrix.sum_duplicates()  # counts per column, columns sorted
        data = matrix.data
        if self.sublinear_tf:
            np.log(data, out=data)
            data += 1.0
        data *= self.idf_[matrix.indices]
        rows = np.diff(matrix.indptr)
        row_of = np.repeat(np.arange(len(rows)), rows)
        norms = np.sqrt(np.bincount(row_of, weights=data * data, minlength=len(rows)))
        norms[norms == 0] = 1.0
        data /= norms[row_of]
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
