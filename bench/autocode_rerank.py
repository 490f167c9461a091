"""A learnt re-ranking of the default pool's first codes, on dev1000, without refitting:
replayed on the scores that ``python -m bench.autocode_dev1000 --annotated --dump DIR`` kept
(as `bench.autocode_dev1000_variants` replays pooling variants).

For each seed and outer fold, the pool's first ``--candidates`` codes of each row are re-ranked
by a conditional logit (a softmax over the candidates of a linear score of their features, L2
penalty ``--l2``) fitted on the fold's cross-fitted descriptions whose expert code is among
their candidates, then applied to the fold's held-out descriptions. A candidate's features: the
log of its pooled probability and of each member's (fastText, TF-IDF, nearest descriptions), the
nearest descriptions' raw votes for it, the register prior's and the code frequencies' log
factors, its rank in the pool, whether it is each member's first code, and three interactions
(TF-IDF's log probability × TF-IDF's largest probability, the nearest descriptions' log
probability × their largest vote and × whether they voted at all). It asks whether the members
say more than the pool's fixed weights let through: measured, no (top-1 +0.002 on seeds 4–8;
docs/autocode-experiments.md). Top-1 and top-5 of the pool and of the re-ranking, per seed.

    python -m bench.autocode_rerank --dump DIR --output rerank.json
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize

from bench import report
from bench.autocode_dev1000_variants import _DEFAULT, code, measure_inputs

FEATURES = (
    "log pool",
    "log fastText",
    "log TF-IDF",
    "log knn",
    "knn votes",
    "log prior",
    "log frequency",
    "rank",
    "fastText's first",
    "TF-IDF's first",
    "knn's first",
    "log TF-IDF × TF-IDF's largest",
    "log knn × knn's largest vote",
    "log knn × knn voted",
)


def _stacked(keep: dict[str, list]) -> dict[str, Any]:
    out = {k: np.vstack(keep[k]) for k in ("pool", "votes", "log_prior", "log_frequency")}
    out["members"] = [np.vstack([m[i] for m in keep["members"]]) for i in range(3)]
    return out


def features(kept: dict[str, Any], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The pool's first ``k`` codes of each row (n × k) and their features (n × k × FEATURES)."""
    pool, votes = kept["pool"], kept["votes"]
    fasttext, tfidf, knn = kept["members"]
    candidates = np.argsort(-pool, axis=1, kind="stable")[:, :k]
    row = np.arange(len(pool))[:, None]

    def log(p: np.ndarray, floor: float = 1e-6) -> np.ndarray:
        return np.log(p[row, candidates] + floor)

    def first(p: np.ndarray) -> np.ndarray:
        return (p.argmax(axis=1)[:, None] == candidates).astype(float)

    voted = votes.sum(axis=1)[:, None] > 0
    columns = [
        log(pool),
        log(fasttext),
        log(tfidf),
        log(knn, 1e-3),
        votes[row, candidates],
        kept["log_prior"][row, candidates],
        kept["log_frequency"][row, candidates],
        np.broadcast_to(np.arange(k, dtype=float), candidates.shape),
        first(fasttext),
        first(tfidf),
        first(knn) * voted,
        log(tfidf) * tfidf.max(axis=1)[:, None],
        log(knn, 1e-3) * votes.max(axis=1)[:, None],
        log(knn, 1e-3) * voted,
    ]
    return candidates, np.stack(columns, axis=2)


def fit_conditional_logit(x: np.ndarray, y: np.ndarray, l2: float):
    """The weights w maximising Σ log softmax(x_i · w)[y_i] − l2 |w|² (x standardised); returns
    a function scoring new candidates."""
    flat = x.reshape(-1, x.shape[2])
    mean, scale = flat.mean(axis=0), flat.std(axis=0) + 1e-9
    z = (x - mean) / scale
    rows = np.arange(len(y))

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        s = z @ w
        s -= s.max(axis=1, keepdims=True)
        log_total = np.log(np.exp(s).sum(axis=1))
        p = np.exp(s - log_total[:, None])
        value = -(s[rows, y] - log_total).mean() + l2 * (w @ w) / len(y)
        grad = np.einsum("nk,nkd->d", p, z) / len(y) - z[rows, y].mean(axis=0)
        return value, grad + 2 * l2 * w / len(y)

    start = np.zeros(z.shape[2])
    start[0] = 1.0  # the pool's own order
    w = minimize(loss, start, jac=True, method="L-BFGS-B").x
    return lambda new: ((new - mean) / scale) @ w


def measure(dumps: list[Path], k: int, l2: float) -> dict[str, Any]:
    dev, n_cold, nomenclature = measure_inputs()
    results: dict[str, Any] = {}
    for path in dumps:
        folds = pickle.loads(path.read_bytes())  # noqa: S301 (the bench's own dump)
        right = {"pool": [], "re-ranked": []}
        in_five = {"pool": [], "re-ranked": []}
        everything = np.arange(len(dev))
        for fold in folds:
            held = fold["held"].index.to_numpy() - n_cold
            kept_outer = np.setdiff1d(everything, held)
            inner = fold["held_out"]
            inner_kept = [np.setdiff1d(kept_outer, p.index.to_numpy() - n_cold) for p in inner]
            temperatures = list(fold["temperatures"])
            classes = sorted(inner[0].members[0][0])
            position_of = {c: j for j, c in enumerate(classes)}
            inner_keep: dict[str, list] = {}
            outer_keep: dict[str, list] = {}
            _, inner_truth = code(inner, temperatures, _DEFAULT, dev, n_cold, inner_kept,
                                  nomenclature, inner_keep)  # fmt: skip
            _, truth = code([fold["held"]], temperatures, _DEFAULT, dev, n_cold, [kept_outer],
                            nomenclature, outer_keep)  # fmt: skip
            inner_candidates, x = features(_stacked(inner_keep), k)
            candidates, x_new = features(_stacked(outer_keep), k)
            inner_truth_j = np.asarray([position_of.get(c, -1) for c in inner_truth])
            hit = inner_candidates == inner_truth_j[:, None]
            among = hit.any(axis=1)
            score = fit_conditional_logit(x[among], hit[among].argmax(axis=1), l2)
            order = np.argsort(-score(x_new), axis=1, kind="stable")
            reranked = candidates[np.arange(len(candidates))[:, None], order]
            truth_j = np.asarray([position_of.get(c, -1) for c in truth])
            for name, ranked in (("pool", candidates), ("re-ranked", reranked)):
                right[name].append(ranked[:, 0] == truth_j)
                in_five[name].append((ranked[:, :5] == truth_j[:, None]).any(axis=1))
        results[path.stem] = {
            name: {
                "top1": round(float(np.concatenate(right[name]).mean()), 4),
                "top5": round(float(np.concatenate(in_five[name]).mean()), 4),
            }
            for name in right
        }
        print(path.stem, results[path.stem], file=sys.stderr, flush=True)
    gains = [r["re-ranked"]["top1"] - r["pool"]["top1"] for r in results.values()]
    return {
        "candidates": k,
        "l2": l2,
        "features": list(FEATURES),
        "seeds": results,
        "mean_top1_gain": round(float(np.mean(gains)), 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.autocode_rerank", description=__doc__)
    parser.add_argument("--dump", type=Path, required=True, help="the --dump folder")
    parser.add_argument("--model", default="fast", help="the model name of the dumps")
    parser.add_argument("--candidates", type=int, default=10, help="codes re-ranked per row")
    parser.add_argument("--l2", type=float, default=1.0, help="the penalty on the weights")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    dumps = sorted(args.dump.glob(f"{args.model}-seed*.pkl"))
    if not dumps:
        parser.error(f"no {args.model}-seed*.pkl in {args.dump}")
    if args.candidates < 2:
        parser.error("--candidates: at least 2 codes to re-rank")
    report(measure(dumps, args.candidates, args.l2), args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
