"""The fastText member: supervised fastText (softmax loss), word n-grams and subwords, and the
allocator setting its training needs."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from autocode.model.base import Classifier, Texts


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
        # fastText lists its labels by frequency: sorted here, as the ensemble and the other
        # members keep their classes, so that pooling adds whole rows (reordering the columns
        # of every batch cost 11 ms per 2,000 rows)
        labels = [label.removeprefix("__label__") for label in self._model.get_labels()]
        order = np.argsort(labels)
        self.classes = [labels[i] for i in order]
        output = np.asarray(self._model.get_output_matrix(), dtype=np.float32)
        self._output = np.ascontiguousarray(output[order])

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
