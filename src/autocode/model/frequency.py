"""How often each code occurs in the traffic to code, as a prior over codes.

fastText and TF-IDF learn from notes phrases with balanced class weights: to them every one of
the 732 subclasses is as likely as any other, while real declarations crowd into a few dozen
(letting a furnished flat, ride-hailing, consulting, hairdressing...). An office knows these
frequencies without labelling a description: they are its register's own codes (last year's
coding of the declarations, or the register's stock); with annotations, the experts' codes of
the descriptions tell them too (`autocode.train.fit_frequencies` picks the source).

`CodeFrequencies` turns code counts into log factors log p(code) ^ ``power`` that the ensemble
adds to the logits of the members that do not follow them (`Classifier.follows_frequencies`;
`EnsembleClassifier.pool_logits`), p(code) smoothed along the hierarchy: at each level a node's
share of its parent is (its count + ``smoothing`` / the parent's number of children) / (the
parent's count + ``smoothing``), so a code never counted keeps a share of its branch. Measured
on dev1000 (docs/autocode.md, "Code frequencies"): at cold start, with the codes of the other
folds' descriptions as the table, top-1 0.355 → 0.43; with annotations, 3–4 points more coded
automatically at the same promise.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


class CodeFrequencies:
    """log p(code) ^ power over `classes`, from a table of code counts (module docstring)."""

    def __init__(self, smoothing: float = 5.0, power: float = 0.75, source: str = ""):
        if smoothing <= 0:
            raise ValueError(f"code frequencies smoothing must be > 0, not {smoothing}")
        if power < 0:
            raise ValueError(f"code frequencies power must be ≥ 0, not {power}")
        self.smoothing = float(smoothing)
        self.power = float(power)
        self.source = source  # where the counts came from (a table's URI, or descriptions)
        self.classes: list[str] = []
        self.log_factors = np.zeros(0, dtype=np.float32)  # power · log p(code), max 0
        self.rows = 0.0  # the counts' total

    def fit(
        self,
        counts: Mapping[str, float],
        classes: Sequence[str],
        path: Callable[[str], Sequence[str]],
    ) -> CodeFrequencies:
        """``counts`` of codes (of `classes`; others are ignored), ``path(code)``: its ancestors
        broadest first, then the code itself."""
        self.classes = [str(c) for c in classes]
        paths = {c: list(path(c)) for c in self.classes}
        node_counts: dict[str, float] = defaultdict(float)
        children: dict[str, set[str]] = {}
        for route in paths.values():
            for parent, node in zip(["", *route[:-1]], route, strict=True):
                children.setdefault(parent, set()).add(node)
        for code, count in counts.items():
            if code in paths and count > 0:
                node_counts[""] += count
                for node in paths[code]:
                    node_counts[node] += count
        self.rows = float(node_counts[""])
        log_p = np.zeros(len(self.classes))
        for j, code in enumerate(self.classes):
            for parent, node in zip(["", *paths[code][:-1]], paths[code], strict=True):
                share = self.smoothing / len(children[parent])
                log_p[j] += np.log(
                    (node_counts[node] + share) / (node_counts[parent] + self.smoothing)
                )
        factors = self.power * log_p
        self.log_factors = (factors - factors.max() if len(factors) else factors).astype(np.float32)
        return self

    # -- persistence ---------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        return {
            "smoothing": self.smoothing,
            "power": self.power,
            "rows": self.rows,
            "source": self.source,
        }

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        meta = {**self.meta(), "classes": self.classes}
        (directory / "frequencies.json").write_text(json.dumps(meta, ensure_ascii=False))
        np.save(directory / "log_factors.npy", self.log_factors)

    @classmethod
    def load(cls, directory: Path) -> CodeFrequencies:
        meta = json.loads((directory / "frequencies.json").read_text())
        out = cls(meta["smoothing"], meta["power"], meta.get("source", ""))
        out.classes = list(meta["classes"])
        out.rows = float(meta["rows"])
        out.log_factors = np.load(directory / "log_factors.npy")
        return out
