"""The e5 member: nearest centroid of sentence embeddings (`autocode.embedding`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from autocode.model.base import Classifier, Texts


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
