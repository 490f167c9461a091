"""Distillation of the e5 ensemble into the fast default model, at cold start, on dev1000.

The e5 member lifts cold-start top-1 by ~0.05 but codes ~70 texts/s; the fast default model
(fastText, TF-IDF, the nearest descriptions, the register prior) codes ~11k texts/s. Here the
slow model (the teacher: fastText + TF-IDF + e5, trained on the notes only) codes real
descriptions that nobody labelled, and the fast default model (the student) is trained on the
notes plus those descriptions with the teacher's codes, as `autocode train` trains on any
labelled dataset. In production the descriptions would be the API's prediction log; here they
are the dev1000 descriptions of the other folds (their experts' codes unused): 5-fold, the
held-out fold is never coded by the teacher for training nor trained on, and is scored against
the experts' codes, with the default cold-start model and the teacher scored on the same rows.

    python -m bench.autocode_distill --seeds 0 1 --work /tmp/distill --output distill.json

Each fold trains one student (~2-4 min on 2 cores); the teacher and the cold-start model are
trained once into ``--work`` (the teacher embeds the cold-start rows once, ~75 s, then they are
in the embeddings' disk cache). Models already in ``--work`` are reused: remove it to retrain
after a change to the code. Only top-1 is measured: the student's threshold rests on the
teacher's codes, not on experts', so its automatic decision would not keep its promise.
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
            config = f"train:\n  - uri: {directory / 'train.csv'}\n    name: teacher-coded\n"
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.autocode_distill", description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--work", type=Path, default=Path(".data/autocode/distill"))
    parser.add_argument("--output", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args(argv)
    if not DEV1000.exists():
        parser.error(f"{DEV1000} is missing: this measurement needs the annotated descriptions")
    report(run(args.seeds, args.work), args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
