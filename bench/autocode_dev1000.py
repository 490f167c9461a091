"""Quality and speed of autocode's candidate models on dev1000, the 1,000 expert-coded register
descriptions (``../shared/data/annotations/labelstudio_dev1000.csv``, read in place, never
copied): the figures of docs/autocode.md ("Quality on real descriptions").

For each model (``--models``, names of `MODELS`) and seed:

- **cold start**: trained on the notes only (as ``autocode train`` with that model), then coded
  every dev1000 row (none was trained on): top-1 / top-5 per level, coverage at 0.90, and the
  ``auto`` decision of the model as trained (cold start: nothing automatic), and whether a
  threshold measured on real descriptions could be given to cold-start models: on each of
  ``--folds`` folds, the threshold chosen on the other folds (`cross_fitted_threshold`),
  applied to this one; the pooled achieved accuracy with its Wilson interval.
- **speed** (`speed`): one text at a time (p50 / p99 ms) and batch coding (`Coder.predict`,
  texts/s) of distinct dev1000 texts, in this process, after a warm-up;
- **annotated** (``--annotated``): K-fold cross-validation of dev1000 folded into ``train``
  (`autocode.train.cross_validate`: each fold's model trained as ``autocode train`` would,
  held-out calibration and threshold included), once per seed.

Every share comes with its 95 % interval. Results: JSON on stdout, or ``--output``.

    python -m bench.autocode_dev1000 --models fast --seeds 0,1,2 --annotated --output r.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.autocode_models import DEV1000

#: Candidate models: training-config overrides.
MODELS: dict[str, dict[str, Any]] = {
    # the default: fastText + TF-IDF (+ nearest descriptions and the register variables' prior
    # when some descriptions are labelled)
    "fast": {},
    # the default without the register variables' prior (text members only)
    "text": {"categorical_prior": None},
    # the default with the labelled descriptions weighted 3x in TF-IDF's fit
    "weighted": {"source_weights": {"label_subclass": 2.0, "dev1000": 3.0}},
    # the previous default, with the e5 sentence-embedding member (~70 texts/s)
    "e5": {"params": {"members": {"fasttext": {}, "tfidf": {}, "e5": {}}}},
    "fasttext": {"model": "fasttext"},
    "tfidf": {"model": "tfidf"},
}

KEYS = (
    "accuracy",
    "top5_accuracy",
    "accuracy_section",
    "accuracy_division",
    "coverage_at_90",
    "auto_rate",
    "auto_accuracy",
)


def _rounded(metrics: dict[str, float]) -> dict[str, float]:
    out = {}
    for key in KEYS:
        for suffix in ("", "_low", "_high"):
            if key + suffix in metrics:
                out[key + suffix] = round(float(metrics[key + suffix]), 4)
    for key in ("n", "auto_rows", "threshold_at_90"):
        if key in metrics:
            out[key] = round(float(metrics[key]), 4)
    return out


def _config(model: str, seed: int, dev: Path | None):
    from autocode.train import TrainConfig

    raw: dict[str, Any] = {**MODELS[model], "seed": seed}
    if dev is not None:
        raw["train"] = [{"uri": str(dev), "name": "dev1000"}]
    return TrainConfig.from_dict(raw)


def cross_fitted_threshold(
    ic: np.ndarray, correct: np.ndarray, folds: int, seed: int
) -> dict[str, float]:
    """Could a cold-start model take a threshold measured on real descriptions? Each fold coded
    with the threshold chosen on the other folds (the smallest IC whose rows' accuracy has its
    Wilson lower bound at 0.90: `largest_coverage` with ``bound``; none: nothing automatic); the
    pooled automatic share and its accuracy, with Wilson intervals."""
    from autocode.evaluate import largest_coverage, wilson_interval

    fold_of = np.random.default_rng(seed).permutation(len(ic)) % folds
    auto = np.zeros(len(ic), dtype=bool)
    thresholds = []
    for fold in range(folds):
        held = fold_of == fold
        coverage, threshold = largest_coverage(ic[~held], correct[~held], 0.90, bound=True)
        threshold = threshold if coverage > 0 else 2.0
        thresholds.append(threshold)
        auto[held] = ic[held] >= threshold
    right = float(correct[auto].sum())
    rate_low, rate_high = wilson_interval(float(auto.sum()), len(ic))
    low, high = wilson_interval(right, float(auto.sum()))
    return {
        "auto_rate": round(float(auto.mean()), 4),
        "auto_rate_low": round(rate_low, 4),
        "auto_rate_high": round(rate_high, 4),
        "auto_accuracy": round(right / auto.sum(), 4) if auto.any() else float("nan"),
        "auto_accuracy_low": round(low, 4),
        "auto_accuracy_high": round(high, 4),
        "thresholds": [round(t, 4) for t in thresholds],
    }


def speed(coder, texts: list[str], singles: int = 200, passes: int = 3) -> dict:
    """In this process, after a warm-up on texts not in dev1000: one text at a time (p50 / p99
    ms, the first ``singles`` texts), then batch coding of the other distinct texts, ``passes``
    times (texts/s of the first pass, and of the best: the e5 member caches the embeddings of
    texts it has seen, so its later passes are not what new texts cost), in wall-clock time
    and per CPU second of this process."""
    import pandas as pd

    coder.predict(pd.DataFrame({"text": [f"activité numéro {i} de vente" for i in range(200)]}))
    times = []
    for text in texts[:singles]:
        one = pd.DataFrame({"text": [text]})
        began = time.perf_counter()
        coder.predict(one)
        times.append((time.perf_counter() - began) * 1000)
    frame = pd.DataFrame({"text": texts[singles:]})
    rates, cpu_rates = [], []
    for _ in range(passes):
        started, cpu = time.perf_counter(), time.process_time()
        coder.predict(frame)
        rates.append(len(frame) / (time.perf_counter() - started))
        cpu_rates.append(len(frame) / (time.process_time() - cpu))
    return {
        "single_p50_ms": round(float(np.percentile(times, 50)), 3),
        "single_p99_ms": round(float(np.percentile(times, 99)), 3),
        "batch_rows": len(frame),
        "batch_texts_per_s_first": round(rates[0]),
        "batch_texts_per_s_best": round(max(rates)),
        # per second of this process's CPU time: what one free core would code (wall-clock
        # rates fall with the machine's load; this one much less)
        "batch_texts_per_cpu_s_first": round(cpu_rates[0]),
        "batch_texts_per_cpu_s_best": round(max(cpu_rates)),
    }


def cold_start(model: str, seed: int, folds: int, rows, texts: list[str]) -> dict[str, Any]:
    from autocode.train import evaluate_coder, fit_coder, load_inputs

    config = _config(model, seed, None)
    inputs = load_inputs(config)
    started = time.perf_counter()
    coder, _, _ = fit_coder(config, inputs.nomenclature, inputs.table)
    fit_s = time.perf_counter() - started
    # speed first: coding dev1000 fills the e5 member's cache of embeddings by text
    timing = speed(coder, texts)
    evaluation = evaluate_coder(coder, rows)
    frame = evaluation.predictions
    ic = frame["ic"].to_numpy(dtype=np.float64)
    correct = frame["correct"].to_numpy(dtype=bool)
    out = {
        "train_s": round(fit_s, 1),
        "threshold": coder.threshold,
        "threshold_basis": coder.info.get("threshold_basis", {}).get("rule"),
        **_rounded(evaluation.metrics),
        "threshold_rule_cross_fitted": cross_fitted_threshold(ic, correct, folds, seed),
        **timing,
    }
    return out


def annotated(model: str, seeds: list[int], folds: int, dump: Path | None = None) -> dict[str, Any]:
    """``folds``-fold cross-validation with dev1000 in ``train``, per seed, and each outer
    fold's threshold and what it rests on. ``dump``: also pickle, per seed, each fold model's
    members' scores of its held-out rows and the cross-fitted scores it was calibrated on
    (`autocode.train.HeldOutScores`), to study pooling choices without refitting."""
    from autocode.train import cross_validate, scores_of

    started = time.perf_counter()
    thresholds: dict[str, list[dict[str, Any]]] = {}
    kept: dict[int, list[dict[str, Any]]] = {}

    def record(seed, fold, coder, held, held_out) -> None:
        basis = dict(coder.info.get("threshold_basis", {}))
        basis.pop("note", None)
        thresholds.setdefault(str(seed), []).append({"threshold": coder.threshold, **basis})
        if dump is not None:
            kept.setdefault(seed, []).append(
                {
                    "fold": fold,
                    "held": scores_of(coder, held),
                    "held_out": held_out,
                    "temperatures": [
                        m.temperature
                        for m in getattr(coder.classifier, "members", [coder.classifier])
                    ],
                    "threshold": coder.threshold,
                }
            )

    config = _config(model, seeds[0], DEV1000)
    outcome = cross_validate(config, folds, seeds=seeds, record=record)
    if dump is not None:
        import pickle

        dump.mkdir(parents=True, exist_ok=True)
        for seed, folds_kept in kept.items():
            with (dump / f"{model}-seed{seed}.pkl").open("wb") as handle:
                pickle.dump(folds_kept, handle)
    per_seed = {str(s): _rounded(e.metrics) for s, e in outcome.evaluations.items()}
    return {
        "folds": folds,
        "calibration_folds": config.calibration_folds,
        "minutes": round((time.perf_counter() - started) / 60, 1),
        "seeds": per_seed,
        "pooled_over_seeds": _pooled(outcome.evaluations.values()),
        "thresholds": thresholds,
    }


def _pooled(evaluations) -> dict[str, float]:
    """The model's own ``auto`` over all seeds' out-of-fold rows (each row once per seed): its
    share and accuracy with Wilson intervals (rows of different seeds are the same
    descriptions, so the intervals are narrower than they should be: read them per seed)."""
    from autocode.evaluate import wilson_interval

    auto = right = rows = top1 = 0.0
    for evaluation in evaluations:
        frame = evaluation.predictions
        rows += len(frame)
        top1 += float(frame["correct"].sum())
        auto += float(frame["auto"].sum())
        right += float((frame["auto"] & frame["correct"]).sum())
    low, high = wilson_interval(right, auto)
    return {
        "rows": rows,
        "accuracy": round(top1 / rows, 4),
        "auto_rate": round(auto / rows, 4),
        "auto_rows": auto,
        "auto_accuracy": round(right / auto, 4) if auto else float("nan"),
        "auto_accuracy_low": round(low, 4),
        "auto_accuracy_high": round(high, 4),
    }


def _without_nan(value: Any) -> Any:
    """``value`` with NaN (an accuracy of no rows) as null: strict JSON."""
    if isinstance(value, dict):
        return {k: _without_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nan(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.autocode_dev1000", description=__doc__)
    parser.add_argument("--models", default="fast", help=f"comma-separated, of {list(MODELS)}")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--annotated", action="store_true", help="also dev1000 folded in train")
    parser.add_argument("--no-cold-start", action="store_true", help="only --annotated")
    parser.add_argument("--output", type=Path, help="write the JSON here (default: stdout)")
    parser.add_argument("--dump", type=Path, help="with --annotated: pickle the folds' scores here")
    args = parser.parse_args(argv)
    if not DEV1000.is_file():
        parser.error(f"{DEV1000} not found (the shared annotations folder)")
    models = [m for m in args.models.split(",") if m]
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {list(MODELS)}")
    seeds = [int(s) for s in args.seeds.split(",") if s]

    from autocode.data import load_labelled
    from autocode.nomenclature import load_naf2008

    rows = load_labelled(str(DEV1000), load_naf2008(), "text_description", "code").rows
    texts = list(dict.fromkeys(rows["text"]))  # distinct, in order
    results: dict[str, Any] = {"rows": len(rows), "folds": args.folds, "models": {}}
    for model in models:
        entry: dict[str, Any] = {"config": MODELS[model]}
        if not args.no_cold_start:
            entry["cold_start"] = {}
            for seed in seeds:
                print(f"{model}: cold start, seed {seed}", file=sys.stderr, flush=True)
                entry["cold_start"][str(seed)] = cold_start(model, seed, args.folds, rows, texts)
        if args.annotated:
            print(f"{model}: dev1000 in train, {args.folds}-fold CV", file=sys.stderr, flush=True)
            entry["annotated"] = annotated(model, seeds, args.folds, args.dump)
        results["models"][model] = entry
    text = json.dumps(_without_nan(results), indent=2)
    if args.output:
        args.output.write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
