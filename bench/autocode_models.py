"""The model the autocode speed benchmarks measure: the default of ``autocode train``, with
dev1000 (the 1,000 expert-coded register descriptions, ``../shared/data/annotations/``, read in
place) in ``train`` when this machine has it, so that every member of the default model codes:
fastText, TF-IDF, the nearest descriptions and the register variables' prior. Without dev1000:
the cold-start model (fastText + TF-IDF). Trained once into ``.data/autocode/`` (4 minutes with
dev1000, 2 without); ``$AUTOCODE_BENCH_MODEL`` names another model directory instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
DEV1000 = SHARED / "annotations" / "labelstudio_dev1000.csv"


def default_model() -> tuple[Path, str]:
    """The benchmarked model's directory (trained on first use) and what it was trained on."""
    configured = os.environ.get("AUTOCODE_BENCH_MODEL")
    if configured:
        return Path(configured), f"$AUTOCODE_BENCH_MODEL ({configured})"
    annotated = DEV1000.is_file()
    name = "bench-model-dev1000" if annotated else "bench-model"
    trained_on = "notes + dev1000 (the default model)" if annotated else "notes (cold start)"
    directory = REPO / ".data" / "autocode" / name
    if (directory / "MLmodel").is_file():
        return directory, trained_on
    print(f"   training the default model on {trained_on} into {directory} (once)", flush=True)
    command = [sys.executable, "-m", "autocode.cli", "train", "--output", str(directory)]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    with tempfile.TemporaryDirectory() as tmp:
        if annotated:
            config = Path(tmp) / "train.yaml"
            config.write_text(f"train:\n  - uri: {DEV1000}\n    name: dev1000\n")
            command += ["--config", str(config)]
        subprocess.run(
            command,
            check=True,
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    return directory, trained_on
