"""Distillation of the e5 ensemble into the fast default model, at cold start, on dev1000.

The e5 member lifts cold-start top-1 by ~0.05 but codes ~70 texts/s; the fast default model
(fastText, TF-IDF, the nearest descriptions, the register prior) codes ~11k texts/s. Here the
slow model (the teacher: fastText + TF-IDF + e5, trained on the notes only) codes real
descriptions that nobody labelled (as ``autocode distill`` codes the prediction log), and the
fast default model (the student) is trained on the notes plus those descriptions with the
teacher's codes (a train dataset with ``labels: model``: trained on, never calibrated on).
Here the descriptions are the dev1000 descriptions of the other folds (their experts' codes
unused): 5-fold, the held-out fold is never coded by the teacher for training nor trained on,
and is scored against the experts' codes, with the default cold-start model and the teacher
scored on the same rows.

    python -m bench.autocode_distill --seeds 0 1 --work /tmp/distill --output distill.json

``--annotated`` measures the same with annotations: of each fold's 800 training descriptions,
experts coded half; the teacher, trained with them, codes the other half; the default model
trained on the experts' half alone is compared with the one trained on both halves, on top-1
and the automatic decision (which rests on the experts' half in both).

Each fold trains one student (~2-4 min on 2 cores); the teacher and the cold-start model are
trained once into ``--work`` (the teacher embeds the cold-start rows once, ~75 s, then they are
in the embeddings' disk cache). Models already in ``--work`` are reused: remove it to retrain
after a change to the code. Only top-1 is measured: with no expert's code to calibrate on,
the student codes nothing automatically, as any cold-start model.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench import report
from bench.autocode_models import DEV1000

TEACHER = "model: ensemble\nparams: {members: {fasttext: {}, tfidf: {}, e5: {}}}\n"


def _train(output: Path, config: str | None = None) -> Path:
    if (output / "MLmodel").exists():
        return output
    command = [sys.executable, "-m", "autocode.cli", "train", "--output", str(output)]
    if config is not None:
        path = output.with_suffix(".yaml")
        path.write_text(config)
        command += ["--config", str(path)]
    print(f"   training {output.name}", flush=True)
    subprocess.run(command, check=True, capture_output=True)
    return output


def _codes(model: Path, frame: pd.DataFrame) -> np.ndarray:
    from autocode.model import load_coder

    return np.asarray(load_coder(str(model)).predict(frame, k=1)["code_1"].tolist())


def _top1(codes: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    from autocode.evaluate import wilson_interval

    right = int(np.sum(codes == truth))
    low, high = wilson_interval(right, len(truth))
    return {"top1": round(right / len(truth), 3), "ci95": [round(low, 3), round(high, 3)]}


def run(seeds: list[int], work: Path) -> dict[str, Any]:
    from autocode.train import TrainConfig, load_nomenclature

    work.mkdir(parents=True, exist_ok=True)
    nomenclature, _ = load_nomenclature(TrainConfig())
    raw = pd.read_csv(DEV1000, dtype=str)
    truth = np.asarray([nomenclature.normalize(c) or c for c in raw["code"]])
    frame = raw.rename(columns={"text_description": "text"})
    teacher = _codes(_train(work / "teacher", TEACHER), frame)
    cold = _codes(_train(work / "cold-start"), frame)
    out: dict[str, Any] = {"seeds": {}}
    for seed in seeds:
        folds = np.random.default_rng(seed).permutation(len(raw)) % 5
        student = np.empty(len(raw), dtype=object)
        for fold in range(5):
            directory = work / f"seed{seed}-fold{fold}"
            directory.mkdir(exist_ok=True)
            rows = raw[folds != fold].assign(code=teacher[folds != fold])
            rows.to_csv(directory / "train.csv", index=False)
            config = (
                f"train:\n  - uri: {directory / 'train.csv'}\n    name: teacher-coded\n"
                "    labels: model\n"
            )
            model = _train(directory / "model", config)
            student[folds == fold] = _codes(model, frame[folds == fold])
            held = folds == fold
            print(f"   seed {seed} fold {fold}: {_top1(student[held], truth[held])}", flush=True)
        out["seeds"][seed] = {
            name: _top1(codes, truth)
            for name, codes in (("student", student), ("teacher", teacher), ("cold_start", cold))
        }
        print(f"   seed {seed}: {out['seeds'][seed]}", flush=True)
    return out


def _scores(coded: pd.DataFrame, truth: np.ndarray) -> dict[str, Any]:
    """Top-1 and the automatic decision (share, accuracy with its interval) of ``coded``."""
    from autocode.evaluate import wilson_interval

    codes = coded["code_1"].to_numpy()
    auto = coded["auto"].to_numpy(dtype=bool)
    right = int(np.sum(codes[auto] == truth[auto]))
    low, high = wilson_interval(right, int(auto.sum())) if auto.any() else (0.0, 1.0)
    return {
        **_top1(codes, truth),
        "auto_rate": round(float(auto.mean()), 3),
        "auto_accuracy": round(right / auto.sum(), 3) if auto.any() else None,
        "auto_ci95": [round(low, 3), round(high, 3)],
    }


def run_annotated(seeds: list[int], work: Path) -> dict[str, Any]:
    """With annotations: of each fold's 800 training descriptions, experts coded half (A); the
    other half (B) is unlabelled. Baseline: the default model on notes + A. Distilled: the e5
    ensemble trained on notes + A codes B, and the default model trains on notes + A + B
    (``labels: model``). Both are scored on the held-out 200 (top-1, the automatic decision)."""
    from autocode.model import load_coder
    from autocode.train import TrainConfig, load_nomenclature

    work.mkdir(parents=True, exist_ok=True)
    nomenclature, _ = load_nomenclature(TrainConfig())
    raw = pd.read_csv(DEV1000, dtype=str)
    truth = np.asarray([nomenclature.normalize(c) or c for c in raw["code"]])
    frame = raw.rename(columns={"text_description": "text"})
    out: dict[str, Any] = {"seeds": {}}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        folds = rng.permutation(len(raw)) % 5
        half = rng.permutation(len(raw)) % 2  # within the training folds: 0 experts, 1 not
        coded: dict[str, list[pd.DataFrame]] = {"baseline": [], "distilled": [], "teacher": []}
        held_rows: list[np.ndarray] = []
        for fold in range(5):
            directory = work / f"annotated-seed{seed}-fold{fold}"
            directory.mkdir(exist_ok=True)
            experts = raw[(folds != fold) & (half == 0)]
            unlabelled = (folds != fold) & (half == 1)
            experts.to_csv(directory / "experts.csv", index=False)
            a = f"  - uri: {directory / 'experts.csv'}\n    name: experts\n"
            teacher = _train(directory / "teacher", f"calibration_folds: 0\ntrain:\n{a}{TEACHER}")
            teacher_codes = _codes(teacher, frame[unlabelled])
            raw[unlabelled].assign(code=teacher_codes).to_csv(directory / "taught.csv", index=False)
            b = f"  - uri: {directory / 'taught.csv'}\n    name: taught\n    labels: model\n"
            baseline = _train(directory / "baseline", f"train:\n{a}")
            distilled = _train(directory / "distilled", f"train:\n{a}{b}")
            held = np.flatnonzero(folds == fold)
            held_rows.append(held)
            for name, model in (
                ("baseline", baseline),
                ("distilled", distilled),
                ("teacher", teacher),
            ):
                coded[name].append(load_coder(str(model)).predict(frame.iloc[held], k=1))
            scores = {
                name: _scores(parts[-1], truth[held])["top1"] for name, parts in coded.items()
            }
            print(f"   seed {seed} fold {fold}: {scores}", flush=True)
        rows = np.concatenate(held_rows)
        out["seeds"][seed] = {
            name: _scores(pd.concat(parts, ignore_index=True), truth[rows])
            for name, parts in coded.items()
        }
        print(f"   seed {seed}: {out['seeds'][seed]}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.autocode_distill", description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--work", type=Path, default=Path(".data/autocode/distill"))
    parser.add_argument("--output", type=Path, default=None, help="write the results as JSON")
    parser.add_argument(
        "--annotated",
        action="store_true",
        help="with annotations: experts coded half of the training descriptions, the teacher "
        "(trained with them) the other half (run_annotated)",
    )
    args = parser.parse_args(argv)
    if not DEV1000.exists():
        parser.error(f"{DEV1000} is missing: this measurement needs the annotated descriptions")
    measure = run_annotated if args.annotated else run
    report(measure(args.seeds, args.work), args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
