"""The numbers behind calibration and the confidence index: softmax with a temperature, its
fitting, the margin of a code, the logistic map of a margin, and probabilities rescaled to a
given IC without changing the order of the codes."""

from __future__ import annotations

import numpy as np


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
