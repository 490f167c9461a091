"""Prediction for the API: `Coder.predict_proba` (the model's own preprocessing and classifier),
then a lean top-k formatting into plain Python structures.

Why not `Coder.predict`: it builds a pandas DataFrame of k × 3 + levels × 2 columns, which costs
more than the model itself for one description. Both rank with the one `autocode.model.rank`
(top-k by probability, IC = p1 - p2 even when the client asks for k = 1, auto = IC >=
threshold); only the output form differs.

Categorical variables: the model declares their names (`Coder.categorical`). The values it
knows are not stored in the model today, so they are read from what it was trained on: the
``<NAME>_<value>`` tokens of its fastText dictionary or TF-IDF vocabulary
(`categorical_vocabularies`). A model whose `Coder.info` carries ``categorical_values``
(``{name: [values]}``) is trusted instead.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from autocode.model import Coder, rank
from autocode.preprocess import categorical_tokens

MISSING_TOKEN = "nan"  # noqa: S105 - what categorical_tokens writes for a missing value, lower-cased


@dataclass(frozen=True)
class CodeInfo:
    label: str
    levels: dict[str, dict[str, str]]  # level → {"code", "label"}, broadest first


@dataclass
class Coded:
    """One description coded: top-k codes and probabilities (best first), IC, decision."""

    codes: list[str]
    probabilities: list[float]
    ic: float
    auto: bool


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def token_prefix(name: str) -> str:
    """The token prefix of a categorical variable (as `categorical_tokens` writes it)."""
    return name.upper().strip("_") + "_"


def token_value(name: str, value: object) -> str:
    """The value part of the token of ``value`` for variable ``name``, lower-cased."""
    token = categorical_tokens({name: [value]}, [name])[0]
    return token[len(token_prefix(name)) :].lower()


def _members(classifier: Any) -> list[Any]:
    return list(getattr(classifier, "members", None) or [classifier])


def model_words(coder: Coder) -> set[str] | None:
    """Lower-cased single-word tokens the classifier knows (None when it cannot tell)."""
    words: set[str] | None = None
    for member in _members(coder.classifier):
        found: set[str] | None = None
        fasttext_model = getattr(member, "_model", None)
        if fasttext_model is not None and hasattr(fasttext_model, "get_words"):
            found = {w.lower() for w in fasttext_model.get_words()}
        vectorizer = getattr(member, "_vectorizer", None)
        if vectorizer is not None:
            for _, transformer in getattr(vectorizer, "transformer_list", [("", vectorizer)]):
                if getattr(transformer, "analyzer", None) == "word" and hasattr(
                    transformer, "vocabulary_"
                ):
                    found = (found or set()) | {w for w in transformer.vocabulary_ if " " not in w}
        if found is not None:
            words = (words or set()) | found
    return words


def categorical_vocabularies(coder: Coder) -> dict[str, frozenset[str] | None]:
    """For each categorical variable, the (lower-cased token) values the model knows, or None
    when they cannot be determined (then any value is accepted)."""
    names = tuple(coder.categorical)
    if not names:
        return {}
    declared = (coder.info or {}).get("categorical_values")
    if isinstance(declared, Mapping):
        return {
            name: frozenset(token_value(name, v) for v in declared.get(name, []))
            if name in declared
            else None
            for name in names
        }
    words = model_words(coder)
    out: dict[str, frozenset[str] | None] = {}
    for name in names:
        if words is None:
            out[name] = None
            continue
        prefix = token_prefix(name).lower()
        values = frozenset(w[len(prefix) :] for w in words if w.startswith(prefix))
        out[name] = (values - {MISSING_TOKEN}) or None
    return out


class Predictor:
    """Everything the API needs from a loaded coder, prepared once per model."""

    def __init__(self, coder: Coder):
        self.coder = coder
        self.classes = np.asarray(coder.classifier.classes)
        self.n_classes = len(self.classes)
        self.text_column = coder.text_column
        self.categorical = tuple(coder.categorical)
        self.vocabularies = categorical_vocabularies(coder)
        nomenclature = coder.nomenclature
        self.levels = tuple(nomenclature.levels)
        self.codes: dict[str, CodeInfo] = {}
        # JSON of each code's candidate, around its probability: responses are assembled from
        # these (the labels at every level are most of a response's bytes)
        self._json_head: dict[str, str] = {}
        self._json_tail: dict[str, str] = {}
        for code in self.classes.tolist():
            path = nomenclature.path(code)
            levels = {
                level: {"code": path[level], "label": nomenclature.nodes[path[level]].label}
                for level in self.levels
                if level in path
            }
            info = self.codes[code] = CodeInfo(nomenclature.nodes[code].label, levels)
            self._json_head[code] = (
                f'{{"code":{_json(code)},"label":{_json(info.label)},"probability":'
            )
            self._json_tail[code] = f',"levels":{_json(levels)}}}'

    @property
    def model_threshold(self) -> float:
        return float(self.coder.threshold)

    def unknown_value(self, name: str, value: object) -> bool:
        """True when ``value`` of categorical variable ``name`` was never seen in training."""
        known = self.vocabularies.get(name)
        if known is None:
            return False
        token = token_value(name, value)
        return token != MISSING_TOKEN and token not in known

    def frame(
        self, texts: Sequence[str], categorical: Mapping[str, Sequence[object]] | None = None
    ) -> pd.DataFrame:
        columns: dict[str, Any] = {self.text_column: list(texts)}
        for name in self.categorical:
            values = (categorical or {}).get(name)
            columns[name] = list(values) if values is not None else [None] * len(texts)
        return pd.DataFrame(columns)

    def proba(
        self, texts: Sequence[str], categorical: Mapping[str, Sequence[object]] | None = None
    ) -> np.ndarray:
        return self.coder.predict_proba(self.frame(texts, categorical))

    def predict(
        self,
        texts: Sequence[str],
        categorical: Mapping[str, Sequence[object]] | None,
        k: int,
        threshold: float,
    ) -> list[Coded]:
        return self.top_k(self.proba(texts, categorical), k, threshold)

    def top_k(self, proba: np.ndarray, k: int, threshold: float) -> list[Coded]:
        """The coded form of ``proba``: `rank`, the ranking `Coder.format` uses too."""
        ranking = rank(proba, k)
        auto = ranking.auto(threshold).tolist()
        codes = self.classes[ranking.indices].tolist()
        probabilities = ranking.probabilities.tolist()
        ic = ranking.ic.tolist()
        return [Coded(codes[i], probabilities[i], ic[i], auto[i]) for i in range(len(codes))]

    def candidates(self, coded: Coded) -> list[dict[str, Any]]:
        """The response form of one description's top-k: code, label, probability, levels."""
        out = []
        for code, probability in zip(coded.codes, coded.probabilities, strict=True):
            info = self.codes[code]
            out.append(
                {
                    "code": code,
                    "label": info.label,
                    "probability": round(probability, 6),
                    "levels": info.levels,
                }
            )
        return out

    def candidates_json(self, coded: Coded) -> str:
        """`candidates` as JSON text, assembled from per-code fragments (a large batch's
        response is megabytes: encoding it from dicts would cost a quarter of the time)."""
        head, tail = self._json_head, self._json_tail
        parts = ",".join(
            head[code] + repr(round(probability, 6)) + tail[code]
            for code, probability in zip(coded.codes, coded.probabilities, strict=True)
        )
        return f"[{parts}]"

    def warm_up(self) -> None:
        """One prediction, so that the first request does not pay for lazy initialisations."""
        self.predict(["boulangerie pâtisserie"], None, 2, 1.0)
