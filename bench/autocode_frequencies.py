"""The register's code frequencies as a prior at cold start (`code_frequencies`), on dev1000.

A cold-start model learns from notes phrases with balanced class weights; real declarations
crowd into few codes. An office knows how often each code occurs without labelling a
description: its register's codes. No register table is available here, so the table stands
in: for each of 5 folds, the codes of the other folds' 800 descriptions (as experts coded them:
``experts``), or the same with 28 % of them replaced by the e5 ensemble's first code (about the
register's production error rate, issue 17: ``noisy``). The default cold-start model (fitted
once: the frequencies change no member, only the pool) codes the held-out fold with the
frequencies fitted as training fits them (`autocode.train.fit_frequencies`), for each setting
of ``smoothing`` and ``power``; the pooled 1,000 held-out rows are scored against the experts.

    python -m bench.autocode_frequencies --seeds 0 1 2 --work /tmp/distill --output freq.json

``--work`` holds the cold-start model and the teacher (trained once, as
``bench.autocode_distill`` trains them; reused when there). Where that bench's distilled
students of a seed are there too (``seed{S}-fold{F}/model``, the same folds), each codes its
held-out fold with and without the frequencies at the default setting (``student`` rows):
whether the two cold-start levers add up. The teacher itself codes the held-out fold with the
frequencies too (``teacher + TABLE``). ``--distil TABLE`` distils it with them: the teacher
with the fold's TABLE codes the other folds' descriptions, and a student is trained on them
(``labels: model``) with the same TABLE as its ``code_frequencies`` (``distilled with TABLE``;
one student per fold, ~2-4 min each, kept in ``--work``): what `autocode distill` and
`autocode train` give when both the teacher's and the student's configs name the register's
table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench import report
from bench.autocode_distill import TEACHER, _codes, _top1, _train
from bench.autocode_models import DEV1000

#: (smoothing, power) settings measured; the first is the default of `code_frequencies`.
SETTINGS = [(5.0, 0.75), (5.0, 0.5), (5.0, 1.0), (20.0, 1.0), (50.0, 1.0)]
#: Share of the stand-in table's codes replaced by the teacher's in the ``noisy`` table.
NOISE = 0.28


def run(seeds: list[int], work: Path, distil: list[str]) -> dict[str, Any]:
    from autocode.model import load_coder
    from autocode.train import TrainConfig, fit_frequencies, load_nomenclature

    work.mkdir(parents=True, exist_ok=True)
    nomenclature, _ = load_nomenclature(TrainConfig())
    raw = pd.read_csv(DEV1000, dtype=str)
    truth = np.asarray([nomenclature.normalize(c) for c in raw["code"]])
    frame = raw.rename(columns={"text_description": "text"})
    teacher_model = load_coder(str(_train(work / "teacher", TEACHER)))
    teacher = _codes_of(teacher_model, frame)
    coder = load_coder(str(_train(work / "cold-start")))
    out: dict[str, Any] = {"noise": NOISE, "cold_start": _top1(_codes_of(coder, frame), truth)}
    print(f"   cold start: {out['cold_start']}", flush=True)
    for seed in seeds:
        folds = np.random.default_rng(seed).permutation(len(raw)) % 5
        rng = np.random.default_rng(1000 + seed)
        coded: dict[str, np.ndarray] = {}
        for fold in range(5):
            held = folds == fold
            codes = truth[~held].copy()
            noisy = codes.copy()
            swap = rng.random(len(codes)) < NOISE
            noisy[swap] = teacher[~held][swap]
            for table, listed in (("experts", codes), ("noisy", noisy)):
                path = work / f"frequencies-seed{seed}-fold{fold}-{table}.csv"
                pd.DataFrame({"code": listed}).to_csv(path, index=False)
                for smoothing, power in SETTINGS:
                    options = {"uri": str(path), "smoothing": smoothing, "power": power}
                    config = TrainConfig(code_frequencies=options)
                    coder.classifier.frequencies = fit_frequencies(config, coder)
                    name = f"{table} s={smoothing:g} p={power:g}"
                    coded.setdefault(name, np.empty(len(raw), dtype=object))
                    coded[name][held] = _codes_of(coder, frame[held])
                config = TrainConfig(code_frequencies={"uri": str(path)})
                teacher_model.classifier.frequencies = fit_frequencies(config, teacher_model)
                coded.setdefault(f"teacher + {table}", np.empty(len(raw), dtype=object))
                coded[f"teacher + {table}"][held] = _codes_of(teacher_model, frame[held])
                if table in distil:
                    directory = work / f"distilled-{table}-seed{seed}-fold{fold}"
                    name = f"distilled with {table}"
                    coded.setdefault(name, np.empty(len(raw), dtype=object))
                    coded[name][held] = _distilled(directory, teacher_model, raw, frame, held, path)
                teacher_model.classifier.frequencies = None
        coder.classifier.frequencies = None
        coded.update(_students(work, seed, folds, frame))
        out[f"seed{seed}"] = {name: _top1(codes, truth) for name, codes in coded.items()}
        print(f"   seed {seed}: {out[f'seed{seed}']}", flush=True)
    return out


def _distilled(directory: Path, teacher, raw: pd.DataFrame, frame, held, table: Path) -> np.ndarray:
    """The held-out rows' codes by a student trained on the other rows as ``teacher`` (with the
    frequencies of ``table``) codes them (``labels: model``), given the same ``table``; ``frame``
    is ``raw`` as the models read it."""
    directory.mkdir(exist_ok=True)
    rows = raw[~held].assign(code=_codes_of(teacher, frame[~held]))
    rows.to_csv(directory / "train.csv", index=False)
    student = _train(
        directory / "model",
        f"train:\n  - uri: {directory / 'train.csv'}\n    name: teacher-coded\n"
        f"    labels: model\ncode_frequencies: {{uri: {table}}}\n",
    )
    return _codes(student, frame[held])


def _students(work, seed, folds, frame) -> dict[str, np.ndarray]:
    """The distilled students' codes of their held-out folds, without and with the frequencies
    (default setting) of the ``experts`` and ``noisy`` tables written by `run` (none: {})."""
    from autocode.model import load_coder
    from autocode.train import TrainConfig, fit_frequencies

    models = [work / f"seed{seed}-fold{fold}" / "model" for fold in range(5)]
    if not all((m / "MLmodel").is_file() for m in models):
        return {}
    coded = {name: np.empty(len(frame), dtype=object) for name in STUDENT_ROWS}
    for fold, model in enumerate(models):
        held = folds == fold
        student = load_coder(str(model))
        coded["student"][held] = _codes_of(student, frame[held])
        for table in ("experts", "noisy"):
            path = work / f"frequencies-seed{seed}-fold{fold}-{table}.csv"
            config = TrainConfig(code_frequencies={"uri": str(path)})
            student.classifier.frequencies = fit_frequencies(config, student)
            coded[f"student + {table}"][held] = _codes_of(student, frame[held])
    return coded


STUDENT_ROWS = ("student", "student + experts", "student + noisy")


def _codes_of(coder, frame: pd.DataFrame) -> np.ndarray:
    return np.asarray(coder.predict(frame, k=1)["code_1"].tolist())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.autocode_frequencies", description=__doc__
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work", type=Path, default=Path("/tmp/autocode-frequencies"))
    parser.add_argument(
        "--distil", nargs="*", default=[], choices=["experts", "noisy"], help="tables to distil"
    )
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    report(run(args.seeds, args.work, args.distil), args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
