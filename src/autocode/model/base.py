"""What every classifier is: `Classifier` (fit, scores, calibrated probabilities, save/load)
and `ModelInput`, the rows it reads."""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from autocode.model.maths import softmax


def available_cores() -> int:
    """The processor cores this process may run on (its affinity, not the machine's count)."""
    return len(os.sched_getaffinity(0))


_blas = threading.Lock()
_blas_users = 0
_blas_limiter: Any = None


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """While models predict, BLAS (numpy's matrix products) runs on the calling thread only.

    OpenBLAS's own worker threads spin, waiting for work, between products: an API server
    coding 50-row batches kept one of them busy at 100 % of a core for ~0.3 % of useful work,
    halving its predictions per CPU second and taking the core from the prediction log and
    everything else on the machine; batch coding was 15 % slower. `Coder.predict` brings its
    parallelism itself (chunks on a thread pool). Re-entrant and thread-safe: the first caller
    sets the limit, the last one restores the library's own setting (threadpoolctl).

    OpenBLAS (0.3.31) honours the setting only from the main thread (called from another
    thread it changes nothing): enter it there, as `Coder.predict` called from the main thread
    and the API server's lifespan do; the chunks' threads then see it."""
    global _blas_users, _blas_limiter
    with _blas:
        if _blas_users == 0:
            _blas_limiter = _controller().limit(limits=1, user_api="blas")
        _blas_users += 1
    try:
        yield
    finally:
        with _blas:
            _blas_users -= 1
            if _blas_users == 0:
                _blas_limiter.restore_original_limits()
                _blas_limiter = None


@functools.cache
def _controller() -> Any:
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


@dataclass(frozen=True)
class ModelInput:
    """What classifiers read, row by row: the preprocessed text with its categorical tokens
    (``tokens``: fastText, TF-IDF) and the text as written (``raw``: sentence embeddings, which
    lose half their accuracy on stemmed text, docs/autocode.md). When training, ``described``
    says which rows are real descriptions (rows of labelled datasets) rather than phrases of
    the nomenclature (the nearest-descriptions member learns from those only; None: all are).
    ``categorical``: the categorical variables' values as given (`CategoricalPrior`).
    `Coder.inputs` makes it; classifiers also accept a plain list of strings, read as both."""

    tokens: list[str]
    raw: list[str]
    described: list[bool] | None = None
    # the categorical variables' raw values by name (the register prior reads them)
    categorical: Mapping[str, list[object]] | None = None

    def __len__(self) -> int:
        return len(self.tokens)

    def take(self, rows: Sequence[int]) -> ModelInput:
        described = None if self.described is None else [self.described[i] for i in rows]
        categorical = None
        if self.categorical is not None:
            categorical = {k: [v[i] for i in rows] for k, v in self.categorical.items()}
        return ModelInput(
            [self.tokens[i] for i in rows], [self.raw[i] for i in rows], described, categorical
        )


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
    # its scores already follow how often each code occurs in what it learnt from (votes of
    # descriptions): an ensemble's code frequencies are not applied to it
    follows_frequencies: ClassVar[bool] = False
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
