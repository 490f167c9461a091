"""The nearest-descriptions member: votes of the labelled descriptions most like the text.

Register descriptions repeat themselves: the same trade written the same way ("Loueur meublé
non professionnel"), the same legal boilerplate ("l'acquisition, l'administration et
l'exploitation par bail de biens immobiliers"). Notes phrases never read like that, so a few
hundred annotated descriptions teach more by being looked up than by being averaged into a
linear model of 7,000 phrases (measured on dev1000, docs/autocode.md). It learns from the rows
`ModelInput.described` marks (descriptions, not cold-start phrases); with none (cold start) it
knows no code and the ensemble leaves it out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sparse_dot_topn import sp_matmul_topn

from autocode.model.base import Classifier, ModelInput, Texts, available_cores
from autocode.model.tfidf import TfidfFeatures

#: Rows per thread of the similarity product: below, one thread (a request of a few texts).
ROWS_PER_THREAD = 1_000


def _threads(rows: int) -> int:
    """Threads for the similarity product of ``rows`` texts: the cores this process may use,
    one per ``ROWS_PER_THREAD`` rows (a request of a few texts asks the system nothing)."""
    if rows < 2 * ROWS_PER_THREAD:
        return 1
    return max(1, min(available_cores(), rows // ROWS_PER_THREAD))


class NearestClassifier(Classifier):
    """Each code's score is the sum of the cosine similarities of its descriptions among the
    ``neighbours`` nearest to the text (TF-IDF of word 1–2-grams and ``char_wb`` 2–5-grams of
    the preprocessed text, fitted on the descriptions); a softmax with a calibrated temperature
    makes probabilities over the codes it has seen."""

    kind = "knn"
    default_temperature = 10.0  # sums of cosines are in [0, neighbours]; training calibrates it
    follows_frequencies = True  # its votes count descriptions
    ensemble_weight = 1.0
    geometric_weight = 1.0

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {"neighbours": 10, "char_ngram_min": 2, "char_ngram_max": 5}

    def fit(
        self, texts: Texts, codes: Sequence[str], weights: Sequence[float] | None = None
    ) -> NearestClassifier:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.pipeline import make_union

        rows = self.read(texts)
        described = texts.described if isinstance(texts, ModelInput) else None
        keep = [i for i in range(len(rows)) if described is None or described[i]]
        self.classes = sorted({str(codes[i]) for i in keep})
        self._rows = np.zeros((0, 0), dtype=np.float32)
        self._row_class = np.zeros(0, dtype=np.int32)
        self._vectorizer: TfidfFeatures | None = None
        if not keep:
            return self
        p = self.params
        union = make_union(
            TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
            TfidfVectorizer(
                analyzer="char_wb",
                ngram_range=(p["char_ngram_min"], p["char_ngram_max"]),
                sublinear_tf=True,
                dtype=np.float32,
            ),
        )
        union.fit([rows[i] for i in keep])
        self._vectorizer = TfidfFeatures.from_sklearn(union)
        index = {c: i for i, c in enumerate(self.classes)}
        self._set_rows(
            self._vectorizer.transform([rows[i] for i in keep]),
            np.asarray([index[str(codes[i])] for i in keep], dtype=np.int32),
        )
        return self

    def _set_rows(self, matrix, row_class: np.ndarray) -> None:
        import scipy.sparse

        matrix = scipy.sparse.csr_matrix(matrix, dtype=np.float32)
        norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
        norms[norms == 0] = 1.0
        matrix = scipy.sparse.diags(1.0 / norms) @ matrix
        # features × rows, C-contiguous CSR transposed: the query product is sparse × sparse
        self._rows = scipy.sparse.csr_matrix(matrix.T, dtype=np.float32)
        self._row_class = row_class

    def scores(self, texts: Texts) -> np.ndarray:
        rows = self.read(texts)
        out = np.zeros((len(rows), len(self.classes)), dtype=np.float32)
        if self._vectorizer is None or not len(rows):
            return out
        queries = self._vectorizer.transform(rows).astype(np.float32)  # L2-normalised
        count = min(int(self.params["neighbours"]), self._rows.shape[1])
        # the `count` largest cosines of each row, without the dense rows × descriptions matrix
        # (char n-grams make it nearly full: 10k texts × 1,000 descriptions cost 5× more so)
        nearest = sp_matmul_topn(
            queries, self._rows, top_n=count, n_threads=_threads(len(rows))
        ).tocsr()
        row_of = np.repeat(np.arange(len(rows)), np.diff(nearest.indptr))
        np.add.at(out, (row_of, self._row_class[nearest.indices]), nearest.data)
        return out

    def save(self, directory: Path) -> None:
        import scipy.sparse

        if self._vectorizer is None:
            return
        self._vectorizer.save(directory)
        scipy.sparse.save_npz(directory / "knn_rows.npz", self._rows, compressed=False)
        np.save(directory / "knn_row_class.npy", self._row_class)

    @classmethod
    def load(cls, directory: Path, meta: Mapping[str, Any]) -> NearestClassifier:
        import scipy.sparse

        model = cls(**meta["params"], temperature=meta["temperature"])
        model.classes = list(meta["classes"])
        model._vectorizer = None
        model._rows = np.zeros((0, 0), dtype=np.float32)
        model._row_class = np.zeros(0, dtype=np.int32)
        if model.classes:
            model._vectorizer = TfidfFeatures.load(directory)
            model._rows = scipy.sparse.load_npz(directory / "knn_rows.npz").tocsr()
            model._row_class = np.load(directory / "knn_row_class.npy")
        return model
