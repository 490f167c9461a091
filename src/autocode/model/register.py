"""The register's categorical variables as a prior over codes, learnt from labelled descriptions.

A declaration to the business register comes with a few categorical variables besides its text:
the form type (commercial, craft, liberal profession, agricultural, ...), the nature of the
activity, the registration event, the legal category. Each says something about the code: a
craft form (``type_`` M) rarely declares a shop, nature 14 is construction, legal category 6540
is a property company. Notes phrases have none of them, so the text members cannot learn them
from the cold start, and a few hundred annotated descriptions cannot teach 732 codes' worth of
``<NAME>_<value>`` tokens.

`CategoricalPrior` is a naive-Bayes factor over them, estimated on the labelled descriptions
only: for a code c and a value v of variable j, the ratio p(v | c) / p(v), with p(v | c) smoothed
along the hierarchy (subclass → class → group → division → section → all rows, each level pulled
towards its parent by ``smoothing`` pseudo-rows), so that a code with few or no descriptions
borrows from its division or section. The ensemble multiplies its pooled probabilities by
Π_j ratio_j(v_j, c) ^ ``power`` and renormalises (`EnsembleClassifier.pool_logits`). A missing
value has no effect (a client that does not send a variable must not be read as a declaration
that left it empty), unless ``missing`` makes it a value of its own; a value never seen in
training has no effect either, nor has a variable no training row had.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from autocode.preprocess import categorical_tokens

#: The register variables of dev1000 (docs/autocode.md, "Quality on real descriptions"): form
#: type, nature of the activity, registration event, legal category.
REGISTER_VARIABLES = ("type_", "nature", "event", "cj")
#: Up to this many rows, `CategoricalPrior.log_factors` sums per row instead of per combination.
SMALL_BATCH = 8
#: A missing value (None, NaN, empty) as `category` writes it.
MISSING = "NaN"


def category(name: str, value: object) -> str:
    """The value of ``name`` as the prior (and the ``<NAME>_<value>`` tokens) read it: missing
    values (None, NaN, empty) are ``NaN``; ``4.0`` is ``4``; punctuation is dropped."""
    token = categorical_tokens({name: [value]}, [name])[0]
    return token[len(name.upper().strip("_")) + 1 :]


class CategoricalPrior:
    """p(value | code) / p(value) per variable, smoothed along the hierarchy (module docstring)."""

    def __init__(
        self,
        names: Sequence[str],
        smoothing: float = 20.0,
        power: float = 0.5,
        missing: bool = False,
    ):
        if smoothing <= 0:
            raise ValueError(f"categorical prior smoothing must be > 0, not {smoothing}")
        if power < 0:
            raise ValueError(f"categorical prior power must be ≥ 0, not {power}")
        self.names = tuple(names)
        self.smoothing = float(smoothing)
        self.power = float(power)
        self.missing = bool(missing)  # a missing value is a value of its own (else: no effect)
        self.classes: list[str] = []
        # per variable: its values (index 0..V-1) and the log ratios, values × classes (float32)
        self.values: dict[str, list[str]] = {}
        self.log_ratios: dict[str, np.ndarray] = {}
        self.rows = 0

    def fit(
        self,
        values: Mapping[str, Sequence[object] | None],
        codes: Sequence[str],
        classes: Sequence[str],
        ancestors: Callable[[str], Sequence[str]],
    ) -> CategoricalPrior:
        """Estimate from labelled descriptions: ``values`` of each variable (None: the rows do
        not have it), their ``codes``, the ``classes`` to give ratios for, and ``ancestors(code)``:
        its ancestors, broadest first, the code excluded."""
        self.classes = [str(c) for c in classes]
        self.values, self.log_ratios = {}, {}
        self.rows = len(codes)
        paths = {c: [*ancestors(c), c] for c in {*self.classes, *map(str, codes)}}
        for name in self.names:
            column = values.get(name)
            if column is None or not len(codes):
                continue
            pairs = [(category(name, v), str(c)) for v, c in zip(column, codes, strict=True)]
            if not self.missing:
                pairs = [(v, c) for v, c in pairs if v != MISSING]
            if not pairs:
                continue
            vocabulary = sorted({v for v, _ in pairs})
            index = {v: i for i, v in enumerate(vocabulary)}
            counts: dict[str, np.ndarray] = {}  # node → counts per value
            total = np.zeros(len(vocabulary))
            for value, code in pairs:
                total[index[value]] += 1
                for node in paths[code]:
                    counts.setdefault(node, np.zeros(len(vocabulary)))[index[value]] += 1
            # add-one at the root: a value seen once is not certain of its share
            root = (total + 1.0) / (total.sum() + len(vocabulary))
            cache: dict[str, np.ndarray] = {}

            def p(path: list[str], root=root, counts=counts, cache=cache) -> np.ndarray:
                key = path[-1]
                if key not in cache:
                    parent = p(path[:-1]) if len(path) > 1 else root
                    n = counts.get(key)
                    cache[key] = (
                        parent
                        if n is None
                        else (n + self.smoothing * parent) / (n.sum() + self.smoothing)
                    )
                return cache[key]

            ratios = np.stack([np.log(p(paths[c]) / root) for c in self.classes], axis=1)
            self.values[name] = vocabulary
            self.log_ratios[name] = ratios.astype(np.float32)
        return self

    def log_factors(
        self, values: Mapping[str, Sequence[object] | None], n: int
    ) -> np.ndarray | None:
        """Per row, Σ_j power · log ratio_j(v_j, c) over `classes` (n × classes), or None when
        no variable applies (nothing learnt, or no value given). Rows share their factors by
        combination of values (a batch has few): one sum per combination, one gather."""
        columns, tables = [], []
        for name, ratios in self.log_ratios.items():
            column = values.get(name)
            if column is None:
                continue
            index = {v: i for i, v in enumerate(self.values[name])}
            seen: dict[object, int] = {}  # raw value → row of `table` (the last: no effect)
            rows = np.empty(len(column), dtype=np.intp)
            for i, value in enumerate(column):
                key = value if isinstance(value, str | int | None) else (type(value), str(value))
                found = seen.get(key)
                if found is None:
                    found = seen[key] = index.get(category(name, value), len(index))
                rows[i] = found
            if (rows == len(index)).all():
                continue
            columns.append(rows)
            tables.append(np.vstack([ratios, np.zeros((1, ratios.shape[1]), ratios.dtype)]))
        if not columns:
            return None
        if n <= SMALL_BATCH:  # one request of the API: a plain sum (np.unique costs more)
            out = np.zeros((n, len(self.classes)), dtype=np.float32)
            for rows, ratios in zip(columns, tables, strict=True):
                out += ratios[rows]
            return out * np.float32(self.power) if self.power != 1.0 else out
        combos, inverse = np.unique(np.stack(columns, axis=1), axis=0, return_inverse=True)
        table = np.zeros((len(combos), len(self.classes)), dtype=np.float32)
        for j, ratios in enumerate(tables):
            table += ratios[combos[:, j]]
        if self.power != 1.0:
            table *= np.float32(self.power)
        return table[inverse.reshape(-1)]

    # -- persistence ---------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "smoothing": self.smoothing,
            "power": self.power,
            "missing": self.missing,
            "classes": self.classes,
            "values": self.values,
            "rows": self.rows,
        }

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "prior.json").write_text(json.dumps(self.meta(), ensure_ascii=False))
        for i, name in enumerate(self.log_ratios):
            np.save(directory / f"log_ratios_{i}.npy", self.log_ratios[name])

    @classmethod
    def load(cls, directory: Path) -> CategoricalPrior:
        meta = json.loads((directory / "prior.json").read_text())
        prior = cls(meta["names"], meta["smoothing"], meta["power"], meta.get("missing", False))
        prior.classes = list(meta["classes"])
        prior.rows = int(meta.get("rows", 0))
        prior.values = {k: list(v) for k, v in meta["values"].items()}
        prior.log_ratios = {
            name: np.load(directory / f"log_ratios_{i}.npy") for i, name in enumerate(prior.values)
        }
        return prior
