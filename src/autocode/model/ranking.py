"""The one top-k ranking of probabilities, with the confidence index and the automatic-coding
decision. `Coder.format` (training, batch coding, the pyfunc) and the API's predictor both call
`rank`, so a description gets the same codes, IC and decision wherever it is coded."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Ranking:
    """Per row: the ``k`` best class indices and their probabilities (best first, ties in class
    order), and the confidence index ``ic`` = p1 - p2."""

    indices: np.ndarray  # (n, k) int
    probabilities: np.ndarray  # (n, k) float64
    ic: np.ndarray  # (n,) float64

    def auto(self, threshold: float) -> np.ndarray:
        """The automatic-coding decision: IC ≥ threshold."""
        return self.ic >= threshold


def rank(proba: np.ndarray, k: int) -> Ranking:
    """The ``k`` most likely classes of each row of ``proba`` (k is clipped to [1, classes]).

    The two best classes are always ranked, whatever ``k``: IC = p1 - p2 must not depend on how
    many codes are returned (k = 1 once gave IC = p1). With a single class, p2 = 0.
    """
    proba = np.asarray(proba)
    n, n_classes = proba.shape
    k = max(1, min(int(k), n_classes))
    width = min(max(k, 2), n_classes)
    if n == 0:
        empty = np.zeros((0, k))
        return Ranking(empty.astype(int), empty, np.zeros(0))
    if width < n_classes:
        top = np.argpartition(-proba, kth=width - 1, axis=1)[:, :width]
    else:
        top = np.broadcast_to(np.arange(n_classes), (n, n_classes))
    top_p = np.take_along_axis(proba, top, axis=1).astype(np.float64)
    # stable on the class index, so that equal probabilities always come in class order
    order = np.lexsort((top, -top_p), axis=1)
    top = np.take_along_axis(top, order, axis=1)
    top_p = np.take_along_axis(top_p, order, axis=1)
    ic = top_p[:, 0] - (top_p[:, 1] if width > 1 else 0.0)
    return Ranking(top[:, :k], top_p[:, :k], ic)
