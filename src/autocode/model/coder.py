"""The `Coder`: preprocessing + classifier + nomenclature, raw rows in, coded rows out."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autocode.data import SOURCE, is_cold_start_source
from autocode.model.base import Classifier, ModelInput, available_cores, one_blas_thread
from autocode.model.kinds import CLASSIFIERS
from autocode.model.ranking import rank
from autocode.nomenclature import Nomenclature
from autocode.preprocess import PreprocessConfig, Preprocessor, categorical_tokens

FORMAT_VERSION = 2  # 2: TF-IDF weights stored sparse (format 1 still loads)
#: `Coder.predict` codes larger batches in chunks of this many rows, on every available core:
#: a chunk's (rows × codes) arrays stay in the processor's caches (20,000 texts at once coded
#: 2.3× slower than in chunks of 2,000 on one core, `make bench`) and memory stays bounded.
CHUNK_ROWS = 2_000


# -- the coder: raw rows in, coded rows out -------------------------------------------------------
@dataclass
class Coder:
    """Preprocessing + classifier + nomenclature: everything needed to code raw rows."""

    classifier: Classifier
    nomenclature: Nomenclature
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    # every categorical variable the model reads (the API's and `predict`'s optional inputs)
    categorical: tuple[str, ...] = ()
    # those of them appended to the text as ``<NAME>_<value>`` tokens (None: all of them, as
    # models saved before the register prior); the others only feed the ensemble's prior
    token_variables: tuple[str, ...] | None = None
    text_column: str = "text"
    threshold: float = 0.8  # IC threshold of the automatic-coding decision
    k: int = 5
    info: dict[str, Any] = field(default_factory=dict)
    # Weight given to a leaf code written in the text itself ("... CODE APE 4339Z"): business
    # owners often copy their code; 0 disables it.
    code_mention_weight: float = 0.5

    def __post_init__(self) -> None:
        self._preprocessor = Preprocessor(self.preprocess)

    def _texts(self, frame: pd.DataFrame) -> list[object]:
        column = self.text_column if self.text_column in frame else _find_text_column(frame)
        return frame[column].tolist()

    def features(self, frame: pd.DataFrame) -> list[str]:
        """Model input strings: normalised text, then one token per categorical variable."""
        texts = self._preprocessor(self._texts(frame))
        names = self.categorical if self.token_variables is None else self.token_variables
        if not names:
            return texts
        values = {
            name: frame[name].tolist() if name in frame else [None] * len(frame) for name in names
        }
        tokens = categorical_tokens(values, names)
        return [f"{t} {c}" for t, c in zip(texts, tokens, strict=True)]

    def inputs(self, frame: pd.DataFrame) -> ModelInput:
        """What the classifier reads: `features`, the raw text (empty when missing) and, for
        training rows with a ``source``, which rows are descriptions (not cold-start phrases)."""
        raw = [t if isinstance(t, str) else "" for t in self._texts(frame)]
        described = None
        if SOURCE in frame:
            described = [not is_cold_start_source(s) for s in frame[SOURCE]]
        categorical: dict[str, list[object]] = {
            name: frame[name].tolist() if name in frame else [None] * len(frame)
            for name in self.categorical
        }
        return ModelInput(self.features(frame), raw, described, categorical or None)

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        if len(frame) == 0:
            return np.zeros((0, len(self.classifier.classes)), dtype=np.float32)
        inputs = self.inputs(frame)
        with one_blas_thread():
            proba = self.classifier.predict_proba(inputs)
        if self.code_mention_weight > 0:
            self.mix_code_mentions(proba, inputs.raw)
        return proba

    def mix_code_mentions(self, proba: np.ndarray, texts: list[str]) -> None:
        """In place: rows whose text names exactly one known leaf code get that code mixed in,
        ``p ← (1 - w)·p + w·onehot``."""
        weight = self.code_mention_weight
        for row, text in enumerate(texts):
            if not isinstance(text, str) or not _CODE_LIKE.search(text):
                continue
            index = self._class_index()
            named = {self.nomenclature.find(m) for m in _CODE_LIKE.findall(text)}
            found = {c for c in named if c is not None and c in index}
            if len(found) == 1:
                proba[row] *= 1 - weight
                proba[row, index[found.pop()]] += weight

    def predict(
        self, frame: pd.DataFrame, k: int | None = None, threshold: float | None = None
    ) -> pd.DataFrame:
        """Top-k codes, probabilities and labels; top-1 code and label at every level; IC and
        the automatic-coding decision ``auto`` (IC ≥ threshold). Batches of more than
        `CHUNK_ROWS` rows are coded in chunks, in threads (the members' numerical work releases
        the interpreter's lock)."""
        if len(frame) <= CHUNK_ROWS:
            return self.format(self.predict_proba(frame), k, threshold)
        chunks = [frame.iloc[i : i + CHUNK_ROWS] for i in range(0, len(frame), CHUNK_ROWS)]
        with one_blas_thread(), ThreadPoolExecutor(min(len(chunks), available_cores())) as pool:
            parts = pool.map(lambda chunk: self.predict(chunk, k, threshold), chunks)
            return pd.concat(list(parts), ignore_index=True)

    def format(
        self, proba: np.ndarray, k: int | None = None, threshold: float | None = None
    ) -> pd.DataFrame:
        """The coded rows of ``proba`` (`rank`: the one ranking the API uses too)."""
        threshold = self.threshold if threshold is None else float(threshold)
        ranking = rank(proba, int(k or self.k))
        classes = np.asarray(self.classifier.classes)
        labels = self._labels()
        out: dict[str, Any] = {}
        for r in range(ranking.indices.shape[1]):
            codes = classes[ranking.indices[:, r]]
            out[f"code_{r + 1}"] = codes
            out[f"proba_{r + 1}"] = ranking.probabilities[:, r]
            out[f"label_{r + 1}"] = [labels[c] for c in codes]
        out["ic"] = ranking.ic
        out["auto"] = ranking.auto(threshold)
        paths = self._paths()
        for level in self.nomenclature.levels:
            codes = [paths[c][level] for c in out["code_1"]]
            out[level] = codes
            out[f"{level}_label"] = [labels[c] for c in codes]
        return pd.DataFrame(out)

    def _class_index(self) -> dict[str, int]:
        """Each class's column (kept while the classifier's list of classes is the same one:
        building it for every call cost a single prediction 5 %)."""
        classes = self.classifier.classes
        cached = self.__dict__.get("_class_index_cache")
        if cached is None or cached[0] is not classes:
            cached = (classes, {c: i for i, c in enumerate(classes)})
            self._class_index_cache = cached
        return cached[1]

    def _labels(self) -> dict[str, str]:
        if not hasattr(self, "_label_cache"):
            self._label_cache = {n.code: n.label for n in self.nomenclature}
        return self._label_cache

    def _paths(self) -> dict[str, dict[str, str]]:
        if not hasattr(self, "_path_cache"):
            self._path_cache = {c: self.nomenclature.path(c) for c in self.classifier.classes}
        return self._path_cache

    # -- persistence ---------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "classifier").mkdir(exist_ok=True)
        self.classifier.save(directory / "classifier")
        self.nomenclature.save(directory / "nomenclature.json")
        meta = {
            "format_version": FORMAT_VERSION,
            "classifier": self.classifier.meta(),
            "preprocess": self.preprocess.to_dict(),
            "categorical": list(self.categorical),
            "token_variables": None if self.token_variables is None else list(self.token_variables),
            "text_column": self.text_column,
            "threshold": self.threshold,
            "k": self.k,
            "info": self.info,
            "code_mention_weight": self.code_mention_weight,
        }
        (directory / "coder.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> Coder:
        directory = Path(directory)
        meta = json.loads((directory / "coder.json").read_text())
        kind = meta["classifier"]["kind"]
        classifier = CLASSIFIERS[kind].load(directory / "classifier", meta["classifier"])
        return cls(
            classifier=classifier,
            nomenclature=Nomenclature.load(directory / "nomenclature.json"),
            # models saved before synonyms existed were trained without them
            preprocess=PreprocessConfig.from_dict({"synonyms": {}, **meta["preprocess"]}),
            categorical=tuple(meta["categorical"]),
            token_variables=None
            if meta.get("token_variables") is None
            else tuple(meta["token_variables"]),
            text_column=meta["text_column"],
            threshold=meta["threshold"],
            k=meta["k"],
            info=meta.get("info", {}),
            code_mention_weight=meta.get("code_mention_weight", 0.0),
        )


# A code as people write it: 4 digits and a letter, with or without the dot (4339Z, 43.39Z).
_CODE_LIKE = re.compile(r"(?<![0-9A-Za-z])\d{2}\.?\d{2}[A-Za-z](?![0-9A-Za-z])")


def _find_text_column(frame: pd.DataFrame) -> str:
    for name in ("text", "text_description", "libelle", "description"):
        if name in frame:
            return name
    raise ValueError(f"no text column in {list(frame.columns)}; name it 'text'")
