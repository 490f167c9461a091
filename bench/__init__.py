"""Benchmarks: ``make bench`` runs every ``bench/bench_*.py`` module's ``run()``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def report(results: dict[str, Any], output: Path | None) -> None:
    """A measurement script's results as JSON: printed, and written to ``output`` if given."""
    text = json.dumps(results, indent=2)
    if output:
        output.write_text(text + "\n")
    print(text)
