"""What the loop's annotations bring, measured on dev1000 (the 1,000 expert-coded register
descriptions, ``../shared/data/annotations/labelstudio_dev1000.csv``, read in place):

- **learning curve**: accuracy on held-out dev1000 rows as a function of the number of
  annotations folded into training (``--sizes``, default 0, 250, 500, 750), by K-fold
  cross-validation (``--folds``, default 4: each fold's 250 rows held out, the other 750 the
  pool the annotations are drawn from, in a seeded random order, nested: the 500 include the
  250) repeated over ``--seeds`` (the fold assignment and the order);
- **uncertainty against random sampling** at equal budget (``--budget``, default 250): the pool
  rows the cold-start model is least sure of (lowest IC) against the first ``budget`` of the
  random order, each folded into the same training.

Each model is trained as ``autocode retrain`` trains a challenger (`fit_coder`: the cold-start
rows plus the annotations) with one change to fit the shared 2-core machine: no refit, and no
annotation held out to choose the automatic-coding threshold (``description_validation_fraction``
0: all ``n`` annotations are trained on, once; calibration on 10 % of the cold-start rows).
Top-1 accuracy and the coverage at 0.90 (the largest share coded at 0.90 on the rows
themselves) do not depend on the threshold; the model's own ``auto`` is not measured here.
Work is done fold by fold (seed by seed) and the JSON rewritten after each training, so an
interrupted run leaves the folds it finished; the pooled scores are those of the finished
folds (``rows`` says how many). Shares with 95 % Wilson intervals.

    nice -n 10 python -m bench.autocode_loop --seeds 0,1 --output bench/results/autocode_loop.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.autocode_models import DEV1000

#: The top-1 of the business register's own production coding on held-out real descriptions
#: (issue 17): the target with annotations.
PRODUCTION_TOP1 = 0.723
KEYS = ("accuracy", "top5_accuracy", "accuracy_division", "coverage_at_90")


def _scored(parts: list[pd.DataFrame], nomenclature) -> dict[str, float]:
    from autocode.evaluate import evaluate_predictions

    pooled = pd.concat(parts, ignore_index=True)
    truth = pooled.pop("truth").tolist()
    metrics = evaluate_predictions(pooled, truth, nomenclature).metrics
    out = {"rows": int(metrics["n"])}
    for key in KEYS:
        if key in metrics:
            out[key] = round(float(metrics[key]), 4)
            for end in ("low", "high"):
                if f"{key}_{end}" in metrics:
                    out[f"{key}_{end}"] = round(float(metrics[f"{key}_{end}"]), 4)
    return out


def measure(
    seeds: list[int],
    folds: int,
    sizes: list[int],
    budget: int,
    save,
    max_folds: int | None,
    only_codes: list[str] | None = None,
) -> dict:
    from autocode import data as datamod
    from autocode.model.register import REGISTER_VARIABLES
    from autocode.train import DatasetConfig, TrainConfig, fit_coder, load_inputs

    base = TrainConfig(
        refit=False, description_validation_fraction=0.0, only_codes=only_codes or []
    )
    inputs = load_inputs(base)  # the cold start: dev1000's rows are added per fit
    # the annotations are the experts' descriptions of a `train` dataset, as `retrain` gives
    # the gold: the code frequencies learn from them and the register prior reads their
    # variables, as in the default model
    base = dataclasses.replace(base, train=[DatasetConfig(uri=str(DEV1000), name="dev1000")])
    nomenclature = inputs.nomenclature
    dev = datamod.load_labelled(DEV1000, nomenclature, "text_description", "code",
                                REGISTER_VARIABLES, source="dev1000").rows  # fmt: skip
    timings: list[float] = []

    def fit(config, table):
        started = time.perf_counter()
        coder, _, _ = fit_coder(config, nomenclature, table)
        timings.append(time.perf_counter() - started)
        return coder

    def coded(coder, rows: pd.DataFrame) -> pd.DataFrame:
        predictions = coder.predict(rows, k=5)
        return predictions.assign(truth=rows[datamod.CODE].to_numpy())

    results: dict[str, Any] = {"per_seed": {}, "fit_s": []}
    config = base
    print("cold start", file=sys.stderr, flush=True)
    cold = fit(config, inputs.table)  # the notes only: one model for every fold and seed
    cold_ic = cold.predict(dev, k=5)["ic"].to_numpy()
    for seed in seeds:
        config = dataclasses.replace(base, seed=seed)
        order = np.random.default_rng(seed).permutation(len(dev))
        fold_of = np.empty(len(dev), dtype=int)
        fold_of[order] = np.arange(len(dev)) % folds
        curve: dict[int, list[pd.DataFrame]] = {n: [] for n in sizes}
        uncertain: list[pd.DataFrame] = []
        for fold in range(folds if max_folds is None else min(folds, max_folds)):
            test = dev[fold_of == fold]
            pool_index = np.flatnonzero(fold_of != fold)
            shuffled = pool_index[np.random.default_rng([seed, fold]).permutation(len(pool_index))]
            least_sure = pool_index[np.argsort(cold_ic[pool_index], kind="stable")[:budget]]
            plan = [(n, shuffled[:n]) for n in sizes if n]
            plan.insert(1, ("uncertain", least_sure))  # right after the random draw of budget
            done: dict[Any, pd.DataFrame] = {0: coded(cold, test)} if 0 in sizes else {}
            for name, rows in plan:
                print(f"seed {seed} fold {fold}: {name} ({len(rows)} annotations)",
                      file=sys.stderr, flush=True)  # fmt: skip
                table = datamod.combine(inputs.table, dev.iloc[rows])
                done[name] = coded(fit(config, table), test)
            for n in sizes:
                curve[n].append(done[n])
            uncertain.append(done["uncertain"])
            results["per_seed"][str(seed)] = {
                "folds_done": fold + 1,
                "curve": {str(n): _scored(parts, nomenclature) for n, parts in curve.items()},
                f"uncertainty_{budget}": _scored(uncertain, nomenclature),
                f"random_{budget}": _scored(curve[budget], nomenclature)
                if budget in curve
                else None,
            }
            results["mean_over_seeds"] = _mean(results["per_seed"])
            results["fit_s"] = [round(t, 1) for t in timings]
            save(results)
    return results


def _mean(per_seed: dict[str, dict]) -> dict[str, Any]:
    seeds = list(per_seed.values())
    out: dict[str, Any] = {}
    for name in ["curve", *[k for k in seeds[0] if k != "curve"]]:
        if name == "curve":
            out["curve"] = {
                n: _summarise([s["curve"][n] for s in seeds]) for n in seeds[0]["curve"]
            }
        elif isinstance(seeds[0][name], dict):
            out[name] = _summarise([s[name] for s in seeds])
    return out


def _summarise(runs: list[dict[str, float]]) -> dict[str, float]:
    out = {}
    for key in KEYS:
        values = [r[key] for r in runs if key in r]
        if values:
            out[key] = round(float(np.mean(values)), 4)
            out[f"{key}_seed_min"], out[f"{key}_seed_max"] = min(values), max(values)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.autocode_loop", description=__doc__)
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--sizes", default="0,250,500,750", help="annotations folded in")
    parser.add_argument("--budget", type=int, default=250, help="uncertainty vs random budget")
    parser.add_argument("--max-folds", type=int, help="stop each seed after this many folds")
    parser.add_argument("--only-codes", help="restrict to these codes (a quick smoke run)")
    parser.add_argument("--output", type=Path)
    parser.add_argument("--plot", type=Path, help="draw the learning curve into this PNG")
    args = parser.parse_args(argv)
    if not DEV1000.is_file():
        parser.error(f"{DEV1000} not found")
    started = time.perf_counter()
    seeds = [int(s) for s in args.seeds.split(",")]
    sizes = [int(s) for s in args.sizes.split(",")]
    settings = {"seeds": seeds, "folds": args.folds, "sizes": sizes, "budget": args.budget,
                "model": "default (fastText + TF-IDF + knn, register prior, code frequencies), "
                         "no refit",
                "max_folds": args.max_folds}  # fmt: skip

    def save(results: dict) -> None:
        results["settings"] = {**settings, "wall_s": round(time.perf_counter() - started)}
        if args.output:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps(results, indent=2) + "\n")

    only = args.only_codes.split(",") if args.only_codes else None
    settings["only_codes"] = only
    results = measure(seeds, args.folds, sizes, args.budget, save, args.max_folds, only)
    save(results)
    print(json.dumps(results, indent=2))
    if args.plot:
        plot(results, args.plot)
    return 0


def plot(results: dict, path: Path) -> None:
    """The learning curve of each seed: top-1 (with its 95 % interval) and top-5 against the
    annotations folded in (the cold start drawn at the left edge of the log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for seed, per_seed in results["per_seed"].items():
        points = sorted((int(n), m) for n, m in per_seed["curve"].items())
        cold = [m for n, m in points if n == 0]
        labelled = [(n, m) for n, m in points if n > 0]
        sizes = [n for n, _ in labelled]
        top1 = np.array([m["accuracy"] for _, m in labelled])
        low = top1 - np.array([m["accuracy_low"] for _, m in labelled])
        high = np.array([m["accuracy_high"] for _, m in labelled]) - top1
        folds = per_seed["folds_done"]
        line = axes.errorbar(
            sizes, top1, yerr=[low, high], marker="o", capsize=3,
            label=f"top-1, seed {seed} ({folds} folds)",
        )  # fmt: skip
        colour = line[0].get_color()
        top5 = [m["top5_accuracy"] for _, m in labelled]
        label = f"top-5, seed {seed}"
        axes.plot(sizes, top5, "--", marker="s", color=colour, alpha=0.6, label=label)
        if cold and sizes:
            axes.axhline(
                cold[0]["accuracy"], color=colour, linestyle=":", alpha=0.6,
                label=f"cold start top-1, seed {seed}",
            )  # fmt: skip
    axes.axhline(PRODUCTION_TOP1, color="grey", linestyle="-.", alpha=0.7,
                 label=f"the register's production coding ({PRODUCTION_TOP1})")  # fmt: skip
    axes.set_xscale("log")
    ticks = sorted({int(n) for s in results["per_seed"].values() for n in s["curve"] if int(n)})
    axes.set_xticks(ticks, [str(n) for n in ticks])
    axes.minorticks_off()
    axes.set_xlabel("annotated descriptions folded into training (log scale)")
    axes.set_ylabel("accuracy on held-out dev1000 descriptions")
    axes.set_title("What annotations bring: the default model's learning curve")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    raise SystemExit(main())
