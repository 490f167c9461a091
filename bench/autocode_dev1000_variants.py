"""Pooling variants of the default ensemble on dev1000, without refitting: the register
variables' prior (`autocode.model.register.CategoricalPrior`) and hierarchical consistency,
measured on the scores that ``python -m bench.autocode_dev1000 --annotated --dump DIR`` kept.

That run's nested cross-validation kept, for each seed and outer fold, the members' scores of
the outer held-out descriptions by the fold's final model, the cross-fitted scores its
calibration rested on (`autocode.train.HeldOutScores`) and its temperatures. Each variant here
replays what `autocode.train` does with them: the inner (cross-fitted) scores pooled with the
variant give the automatic-coding threshold (`largest_coverage`, guard 1), then the outer scores
pooled the same way are coded and scored against the experts' codes. A variant whose prior is
learnt from descriptions learns it, for each set of scores, from exactly the descriptions the
model that made them was fit on. The members are not refit, so this measures pooling choices
only (a variant that changes what the members learn needs ``bench.autocode_dev1000``).

    python -m bench.autocode_dev1000_variants --dump DIR --output variants.json
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench import report
from bench.autocode_models import DEV1000

#: Variants (``frequencies``: `code_frequencies` (smoothing, power) learnt from the model's own
#: descriptions, as training does; ``pool_frequency``: the same factor on the pool instead);
#: ``knn``: the nearest-descriptions member refit (0.1 s) on the text and these
#: variables' tokens, its temperature fitted again on the cross-fitted rows; the prior's
#: variables, smoothing and power; ``hierarchy``: the power of the
#: division's pooled probability each subclass is multiplied by (0: none); ``ic``: ``member``
#: (the ensemble's confidence member's margin, the default), ``pool`` (p1 - p2 of the pool) or
#: ``tfidf+knn`` (the geometric mean of their margins); ``rule``: how the threshold is chosen on
#: the cross-fitted scores: ``guard`` (right / (auto + 1) ≥ 0.90, the default), ``bound`` (the
#: Wilson lower bound ≥ 0.90) or a number (guard, with that target instead of 0.90);
#: ``learnt_ic``: the IC is a logistic regression of "the top-1 code is right" on what every
#: member says of that code (`_confidence_features`), fitted on the cross-fitted rows (the
#: threshold chosen on its ICs cross-fitted again across their folds), applied to the outer rows.
_REGISTER: dict[str, Any] = {
    "prior": ("type_", "nature", "event", "cj"),
    "smoothing": 20.0,
    "power": 0.5,
    "rule": 0.92,
}
#: The default: + the code frequencies of the model's own descriptions on the members that do
#: not follow them (fastText, TF-IDF), ``code_frequencies`` at (smoothing 5, power 0.75).
_DEFAULT: dict[str, Any] = {**_REGISTER, "frequencies": (5.0, 0.75)}
VARIANTS: dict[str, dict[str, Any]] = {
    # the default: the register prior (smoothing 20, power 0.5), threshold chosen at 0.92
    # (target 0.90 + refit_margin 0.02), the code frequencies of the model's descriptions
    "default": _DEFAULT,
    "default before the code frequencies": _REGISTER,
    "text members only at 0.92": {"rule": 0.92},
    "text members only at 0.90": {},
    "prior s=5 p=1": {"prior": ("type_", "nature", "event", "cj")},
    "prior with missing as a value": {"prior": ("type_", "nature", "event", "cj"), "missing": True},
    "prior s=2": {"prior": ("type_", "nature", "event", "cj"), "smoothing": 2.0},
    "prior s=20": {"prior": ("type_", "nature", "event", "cj"), "smoothing": 20.0},
    "prior p=0.5": {"prior": ("type_", "nature", "event", "cj"), "power": 0.5},
    "prior without cj": {"prior": ("type_", "nature", "event")},
    "prior type_ and nature": {"prior": ("type_", "nature")},
    "prior and IC of the pool": {"prior": ("type_", "nature", "event", "cj"), "ic": "pool"},
    "IC of the pool": {"ic": "pool"},
    "IC of TF-IDF and knn": {"ic": "tfidf+knn"},
    "IC learnt (logistic regression) at 0.92": {**_REGISTER, "learnt_ic": True},
    "IC learnt (logistic regression) at 0.92 with the code frequencies": {
        **_DEFAULT,
        "learnt_ic": True,
    },
    "rule: Wilson bound": {"rule": "bound"},
    "rule: target 0.92": {"rule": 0.92},
    "IC of the pool and target 0.92": {"ic": "pool", "rule": 0.92},
    "prior s=20 p=0.5": {
        "prior": ("type_", "nature", "event", "cj"),
        "smoothing": 20.0,
        "power": 0.5,
    },
    "prior type_ s=20": {"prior": ("type_",), "smoothing": 20.0},
    "prior s=50": {"prior": ("type_", "nature", "event", "cj"), "smoothing": 50.0},
    "knn with the register tokens": {"knn": ("type_", "nature", "event", "cj"), "rule": 0.92},
    "knn with the register tokens and the prior": {
        "knn": ("type_", "nature", "event", "cj"),
        "prior": ("type_", "nature", "event", "cj"),
        "smoothing": 20.0,
        "power": 0.5,
        "rule": 0.92,
    },
    "knn refit as it was (check)": {"knn": (), "rule": 0.92},
    "knn 5 neighbours": {"knn": (), "neighbours": 5, "rule": 0.92},
    "knn 20 neighbours": {"knn": (), "neighbours": 20, "rule": 0.92},
    "knn 40 neighbours": {"knn": (), "neighbours": 40, "rule": 0.92},
    "weights 0.2/0.8/0.6": {**_REGISTER, "weights": [0.2, 0.8, 0.6]},
    "weights 0.2/0.8/1.5": {**_REGISTER, "weights": [0.2, 0.8, 1.5]},
    "weights 0.4/0.8/1": {**_REGISTER, "weights": [0.4, 0.8, 1.0]},
    "weights 0/0.8/1": {**_REGISTER, "weights": [0.0, 0.8, 1.0]},
    "weights 0.2/1.2/1": {**_REGISTER, "weights": [0.2, 1.2, 1.0]},
    # `code_frequencies` learnt from the model's own training descriptions (smoothing, power)
    "code frequencies on the pool s=5 p=0.75": {**_REGISTER, "pool_frequency": (5.0, 0.75)},
    "code frequencies on the pool s=20 p=0.5": {**_REGISTER, "pool_frequency": (20.0, 0.5)},
    "code frequencies on the pool s=20 p=1": {**_REGISTER, "pool_frequency": (20.0, 1.0)},
    "code frequencies on the pool s=5 p=0.5": {**_REGISTER, "pool_frequency": (5.0, 0.5)},
    "code frequencies on the pool s=50 p=0.3": {**_REGISTER, "pool_frequency": (50.0, 0.3)},
    "code frequencies on the pool s=5 p=0.25": {**_REGISTER, "pool_frequency": (5.0, 0.25)},
    # the same on the members that do not follow them (fastText, TF-IDF), as trained models do
    "code frequencies s=5 p=0.5": {**_REGISTER, "frequencies": (5.0, 0.5)},
    "code frequencies s=5 p=1": {**_REGISTER, "frequencies": (5.0, 1.0)},
    "code frequencies s=20 p=1": {**_REGISTER, "frequencies": (20.0, 1.0)},
    "code frequencies s=20 p=0.3": {**_REGISTER, "frequencies": (20.0, 0.3)},
    "hierarchy 0.5": {"hierarchy": 0.5},
    "hierarchy 1": {"hierarchy": 1.0},
    "prior + hierarchy 0.5": {"prior": ("type_", "nature", "event", "cj"), "hierarchy": 0.5},
}


def _ensemble(classes: list[str], ic: str, weights=None):
    from autocode.model import EnsembleClassifier, FastTextClassifier, NearestClassifier
    from autocode.model.tfidf import TfidfClassifier

    members = [FastTextClassifier(), TfidfClassifier(), NearestClassifier()]
    confidence = {"member": "tfidf", "pool": None, "tfidf+knn": ["tfidf", "knn"]}[ic]
    ensemble = EnsembleClassifier(members, weights, confidence)
    ensemble.classes = classes
    return ensemble


def code(parts, temperatures, variant, dev, n_cold, train_positions, nomenclature, keep=None):
    """Probabilities of the rows of ``parts`` (HeldOutScores, each scored by a model fit on the
    dev rows ``train_positions[i]``) pooled as the variant says; with the rows' codes.
    ``keep`` (a dict), if given, receives what each row's pool was made of, over ``classes``
    (`bench.autocode_rerank`): ``pool`` (the pooled probabilities), ``members`` (each member's
    probabilities as pooled, with the frequencies), ``votes`` (the knn member's raw votes),
    ``log_prior`` and ``log_frequency`` (0 where there are none)."""
    from autocode.model import Coder
    from autocode.model.frequency import CodeFrequencies
    from autocode.model.register import CategoricalPrior

    def path(c: str) -> list[str]:
        return [nomenclature.path(c)[level] for level in nomenclature.levels]

    classes = sorted(parts[0].members[0][0])
    ensemble = _ensemble(classes, variant.get("ic", "member"), variant.get("weights"))
    coder = Coder(ensemble, nomenclature)
    position = {c: j for j, c in enumerate(classes)}
    division = None
    if variant.get("hierarchy"):
        divisions = sorted({nomenclature.path(c)["division"] for c in classes})
        index = {d: i for i, d in enumerate(divisions)}
        division = np.zeros((len(classes), len(divisions)), dtype=np.float32)
        for j, c in enumerate(classes):
            division[j, index[nomenclature.path(c)["division"]]] = 1.0
    pooled, margins, rows = [], [], []
    for part, kept in zip(parts, train_positions, strict=True):
        dev_rows = dev.iloc[part.index.to_numpy() - n_cold]
        rows.append(dev_rows)
        log_prior = None
        if variant.get("prior"):
            train = dev.iloc[kept]
            prior = CategoricalPrior(
                variant["prior"],
                variant.get("smoothing", 5.0),
                variant.get("power", 1.0),
                variant.get("missing", False),
            )
            prior.fit(
                {name: train[name].tolist() for name in variant["prior"]},
                train["code"].tolist(),
                classes,
                lambda c: [nomenclature.path(c)[lv] for lv in nomenclature.levels[:-1]],
            )
            log_prior = prior.log_factors(
                {name: dev_rows[name].tolist() for name in variant["prior"]}, len(dev_rows)
            )
        active = [
            (member, weight, cls, scores, t)
            for member, weight, (cls, scores), t in zip(
                ensemble.members, ensemble.weights, part.members, temperatures, strict=True
            )
            if cls
        ]
        log_frequency = None
        if variant.get("frequencies"):  # as training fits them from the model's descriptions
            counts = dev["code"].iloc[kept].value_counts().to_dict()
            fitted = CodeFrequencies(*variant["frequencies"]).fit(counts, classes, path)
            log_frequency = fitted.log_factors
        members = [
            (
                member.kind,
                np.asarray([position[c] for c in cls], dtype=np.intp),
                scores * np.float32(t),
                weight,
            )
            for member, weight, cls, scores, t in active
        ]
        out, margin = ensemble.pool_logits(
            len(dev_rows),
            iter(members),
            sum(w for _, w, _, _, _ in active),
            log_prior,
            log_frequency,
        )
        if keep is not None:
            _keep(keep, out, members, part, position, log_prior, log_frequency, ensemble)
        if division is not None:
            mass = out @ division  # n × divisions
            out = out * (mass @ division.T) ** np.float32(variant["hierarchy"])
            out /= out.sum(axis=1, keepdims=True)
            if margin is not None:  # the confidence member's margin at the new top-1
                margin = None  # recomputed below from the pool
        if variant.get("pool_frequency"):  # the same frequencies on the pool (knn included)
            counts = dev["code"].iloc[kept].value_counts().to_dict()
            frequencies = CodeFrequencies(*variant["pool_frequency"]).fit(counts, classes, path)
            out = out * np.exp(frequencies.log_factors)
            out /= out.sum(axis=1, keepdims=True)
            margin = _member_margin([part], temperatures, classes, out)
        pooled.append(out)
        margins.append(margin)
    proba = np.vstack(pooled)
    margin = None if any(m is None for m in margins) else np.concatenate(margins)
    if margin is None and variant.get("hierarchy") and variant.get("ic", "member") == "member":
        # the TF-IDF margin at the pool's top-1 needs TF-IDF's own probabilities
        margin = _member_margin(parts, temperatures, classes, proba)
    proba = ensemble.with_confidence(proba, margin)
    frame = pd.concat(rows)
    coder.mix_code_mentions(proba, frame["text_description"].tolist())
    return coder.format(proba, k=5), frame["code"].tolist()


def _keep(keep, pooled, members, part, position, log_prior, log_frequency, ensemble) -> None:
    """Append one part's pool components to ``keep`` (see `code`); ``position``: each class's
    column."""
    from autocode.model import softmax

    n, width = pooled.shape
    probabilities = []
    for kind, columns, logits, _ in members:
        p = np.zeros((n, width), dtype=np.float32)
        p[:, columns] = softmax(ensemble.pooled_logits(kind, columns, logits, log_frequency))
        probabilities.append(p)
    votes = np.zeros((n, width), dtype=np.float32)
    cls, scores = part.members[2]  # the nearest descriptions: their raw votes
    if cls:
        votes[:, [position[c] for c in cls]] = scores
    zeros = np.zeros((n, width), dtype=np.float32)
    keep.setdefault("pool", []).append(pooled.copy())
    keep.setdefault("members", []).append(probabilities)
    keep.setdefault("votes", []).append(votes)
    keep.setdefault("log_prior", []).append(zeros if log_prior is None else log_prior + zeros)
    frequency = zeros if log_frequency is None else zeros + log_frequency
    keep.setdefault("log_frequency", []).append(frequency)


def _refit_knn(parts, kept_positions, tokens, dev, n_cold, neighbours=10):
    """``parts`` with the knn member's scores replaced by those of a nearest-descriptions model
    refit on the dev rows ``kept_positions[i]`` read as ``tokens`` (text + register tokens)."""
    from autocode.model import NearestClassifier
    from autocode.train import HeldOutScores

    out = []
    for part, kept in zip(parts, kept_positions, strict=True):
        knn = NearestClassifier(neighbours=neighbours).fit(
            [tokens[i] for i in kept], dev["code"].iloc[kept].tolist()
        )
        held = part.index.to_numpy() - n_cold
        members = list(part.members)
        members[2] = (list(knn.classes), knn.scores([tokens[i] for i in held]))
        out.append(HeldOutScores(part.index, members))  # (dumps of older code lack fields)
    return out


def _knn_temperature(parts, dev, n_cold):
    """The knn member's temperature fitted on ``parts`` (as `calibrate_cross_fitted` does)."""
    from autocode.model import fit_temperature

    blocks, truth = [], []
    for part in parts:
        classes, scores = part.members[2]
        index = {c: j for j, c in enumerate(classes)}
        codes = dev["code"].iloc[part.index.to_numpy() - n_cold].tolist()
        known = [r for r, c in enumerate(codes) if c in index]
        width = max(len(classes), 1)
        block = np.full((len(known), width), -np.inf, dtype=np.float32)
        block[:, : len(classes)] = scores[known]
        # pad to a common width: -inf columns weigh nothing in the softmax
        blocks.append(block)
        truth.extend(index[codes[r]] for r in known)
    width = max(b.shape[1] for b in blocks)
    padded = [
        np.hstack([b, np.full((len(b), width - b.shape[1]), -np.inf, dtype=np.float32)])
        for b in blocks
    ]
    return fit_temperature(np.vstack(padded), np.asarray(truth))


def _confidence_features(parts, temperatures, pred) -> np.ndarray:
    """Per row, for the pool's top-1 code c: each member's probability of c, its margin for c,
    whether c is its own first code; the knn member's votes for c, their share of its votes and
    its largest vote; the pool's p1 and p2 (after the IC rescaling: p1 - p2 = the TF-IDF margin)."""
    from autocode.model import margin_at, softmax

    tops = pred["code_1"].to_numpy()
    blocks, offset = [], 0
    for part in parts:
        n = len(part.index)
        top = tops[offset : offset + n]
        offset += n
        columns = []
        for i, ((classes, scores), t) in enumerate(zip(part.members, temperatures, strict=True)):
            if not classes:
                columns += [np.zeros(n)] * (6 if i == 2 else 3)
                continue
            index = {c: j for j, c in enumerate(classes)}
            j = np.asarray([index.get(c, -1) for c in top])
            known = j >= 0
            p = softmax(scores * np.float32(t))
            chosen = np.where(known, p[np.arange(n), np.maximum(j, 0)], 0.0)
            margin = np.where(known, margin_at(p, np.maximum(j, 0)), 0.0)
            columns += [chosen, margin, (p.argmax(axis=1) == j).astype(float)]
            if i == 2:  # the knn member: its raw votes
                votes = np.where(known, scores[np.arange(n), np.maximum(j, 0)], 0.0)
                columns += [votes, votes / np.maximum(scores.sum(axis=1), 1e-9), scores.max(axis=1)]
        blocks.append(np.column_stack(columns))
    return np.column_stack(
        [np.vstack(blocks), pred["proba_1"].to_numpy(), pred["proba_2"].to_numpy()]
    )


def _learnt_ic(inner, inner_pred, inner_truth, outer, outer_pred, temperatures):
    """The inner rows' IC cross-fitted across their folds and the outer rows' IC, by logistic
    regressions of "the top-1 code is right" on `_confidence_features`."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def model():
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))

    x = _confidence_features(inner, temperatures, inner_pred)
    y = inner_pred["code_1"].to_numpy() == np.asarray(inner_truth)
    fold = np.concatenate([np.full(len(part.index), i) for i, part in enumerate(inner)])
    cross = np.zeros(len(y))
    for i in range(len(inner)):
        cross[fold == i] = model().fit(x[fold != i], y[fold != i]).predict_proba(x[fold == i])[:, 1]
    final = model().fit(x, y)
    return cross, final.predict_proba(_confidence_features(outer, temperatures, outer_pred))[:, 1]


def _member_margin(parts, temperatures, classes, proba):
    from autocode.model import margin_at, softmax

    position = {c: j for j, c in enumerate(classes)}
    chunks = []
    for part in parts:
        cls, scores = part.members[1]  # TF-IDF
        p = np.zeros((len(part.index), len(classes)), dtype=np.float32)
        p[:, [position[c] for c in cls]] = softmax(scores * np.float32(temperatures[1]))
        chunks.append(p)
    tfidf = np.vstack(chunks)
    return margin_at(tfidf, proba.argmax(axis=1))


_TOKENS: dict[tuple, list[str]] = {}


def _tokens(dev, names, nomenclature) -> list[str]:
    """The dev rows as the members read them: preprocessed text, then ``<NAME>_<value>``."""
    from autocode.model import Coder, NearestClassifier

    key = tuple(names)
    if key not in _TOKENS:
        coder = Coder(NearestClassifier(), nomenclature, categorical=key, token_variables=key)
        _TOKENS[key] = coder.features(dev.rename(columns={"text_description": "text"}))
    return _TOKENS[key]


def measure_inputs():
    """dev1000 with its register variables, the number of cold-start rows (the dumps' scores
    are indexed after them) and the nomenclature."""
    from autocode.data import load_labelled
    from autocode.nomenclature import load_naf2008
    from autocode.train import TrainConfig, load_inputs

    nomenclature = load_naf2008()
    columns = ("type_", "nature", "event", "cj", "surface")
    dev = load_labelled(str(DEV1000), nomenclature, "text_description", "code", columns).rows
    dev = dev.rename(columns={"text": "text_description"})
    return dev, len(load_inputs(TrainConfig()).table), nomenclature


def measure(dumps: list[Path], variants: dict[str, dict[str, Any]]) -> dict[str, Any]:
    from autocode.evaluate import evaluate_predictions, largest_coverage, wilson_interval

    dev, n_cold, nomenclature = measure_inputs()
    results: dict[str, Any] = {}
    for name, variant in variants.items():
        print(name, file=sys.stderr, flush=True)
        per_seed = {}
        for path in dumps:
            folds = pickle.loads(path.read_bytes())  # noqa: S301 (the bench's own dump)
            outer_positions = [f["held"].index.to_numpy() - n_cold for f in folds]
            everything = np.arange(len(dev))
            parts = []
            for fold in folds:
                held = fold["held"].index.to_numpy() - n_cold
                inner = fold["held_out"]
                kept_outer = np.setdiff1d(everything, held)
                inner_kept = [
                    np.setdiff1d(kept_outer, part.index.to_numpy() - n_cold) for part in inner
                ]
                temps = list(fold["temperatures"])
                outer_parts = [fold["held"]]
                if "knn" in variant:
                    tokens = _tokens(dev, variant["knn"], nomenclature)
                    k = variant.get("neighbours", 10)
                    inner = _refit_knn(inner, inner_kept, tokens, dev, n_cold, k)
                    outer_parts = _refit_knn(outer_parts, [kept_outer], tokens, dev, n_cold, k)
                    temps[2] = _knn_temperature(inner, dev, n_cold)
                inner_pred, inner_truth = code(
                    inner, temps, variant, dev, n_cold, inner_kept, nomenclature
                )
                correct = inner_pred["code_1"].to_numpy() == np.asarray(inner_truth)
                pred, truth = code(
                    outer_parts, temps, variant, dev, n_cold, [kept_outer], nomenclature
                )
                if variant.get("learnt_ic"):
                    inner_pred["ic"], pred["ic"] = _learnt_ic(
                        inner, inner_pred, inner_truth, outer_parts, pred, temps
                    )
                rule = variant.get("rule", "guard")
                coverage, threshold = largest_coverage(
                    inner_pred["ic"].to_numpy(),
                    correct,
                    0.90 if isinstance(rule, str) else float(rule),
                    guard=1,
                    bound=rule == "bound",
                )
                threshold = threshold if coverage > 0 else 2.0
                pred["auto"] = pred["ic"] >= threshold
                parts.append((pred, truth))
            assert sorted(np.concatenate(outer_positions).tolist()) == list(range(len(dev)))
            predictions = pd.concat([p for p, _ in parts], ignore_index=True)
            truth = [c for _, t in parts for c in t]
            metrics = evaluate_predictions(predictions, truth, nomenclature).metrics
            auto = predictions["auto"].to_numpy()
            right = (predictions["code_1"].to_numpy() == np.asarray(truth))[auto]
            low, high = wilson_interval(float(right.sum()), float(auto.sum()))
            per_seed[path.stem] = {
                **{
                    k: round(float(metrics[k]), 4)
                    for k in (
                        "accuracy",
                        "accuracy_low",
                        "accuracy_high",
                        "top5_accuracy",
                        "coverage_at_90",
                        "accuracy_division",
                    )
                },
                "auto_rate": round(float(auto.mean()), 4),
                "auto_rows": int(auto.sum()),
                "auto_accuracy": round(float(right.mean()), 4) if auto.any() else None,
                "auto_accuracy_low": round(low, 4),
                "auto_accuracy_high": round(high, 4),
            }
        described = {k: list(v) if isinstance(v, tuple) else v for k, v in variant.items()}
        results[name] = {"variant": described, "seeds": per_seed}
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.autocode_dev1000_variants", description=__doc__
    )
    parser.add_argument("--dump", type=Path, required=True, help="the --dump folder")
    parser.add_argument("--model", default="fast", help="the model name of the dumps")
    parser.add_argument("--variants", help=f"comma-separated, of {list(VARIANTS)}")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    dumps = sorted(args.dump.glob(f"{args.model}-seed*.pkl"))
    if not dumps:
        parser.error(f"no {args.model}-seed*.pkl in {args.dump}")
    names = args.variants.split(",") if args.variants else list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}")
    report(measure(dumps, {n: VARIANTS[n] for n in names}), args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
