"""The ensemble: members' calibrated probabilities pooled, and its confidence index."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from autocode.model.base import Classifier, ModelInput, Texts
from autocode.model.frequency import CodeFrequencies
from autocode.model.maths import fit_confidence_scale, margin_at, softmax, with_confidence
from autocode.model.register import CategoricalPrior


class EnsembleClassifier(Classifier):
    """The members' probabilities pooled (each member calibrated on its own): their weighted
    mean (``pooling: mean``) or their weighted geometric mean, renormalised (``geometric``,
    log-linear pooling: the softmax of the weighted sum of the members' calibrated scores).

    With ``confidence`` (a member's kind, or several), the codes and their order are the
    pool's, but the confidence index IC = p1 - p2 of the returned probabilities is that member's
    margin for the pool's top-1 code (its probability of that code minus its best other one, 0
    when it prefers another code), or the geometric mean of the listed members' margins (high
    only when they all back the pool's code), mapped by ``confidence_scale`` when training
    fitted one (`confidence_of`): see `with_confidence`. Measured in docs/autocode.md: the
    TF-IDF member's margin ranks right and wrong codes better at the confident end than the
    pool's own, and TF-IDF and e5 together (a lexical and a semantic view agreeing) better
    still on real descriptions, while the pool keeps the better top-1 code.
    """

    kind = "ensemble"
    POOLINGS: ClassVar[tuple[str, ...]] = ("mean", "geometric")

    def __init__(
        self,
        members: Sequence[Classifier],
        weights: Sequence[float] | None = None,
        confidence: str | Sequence[str] | None = None,
        pooling: str = "mean",
    ):
        super().__init__()
        if pooling not in self.POOLINGS:
            raise ValueError(f"ensemble pooling {pooling!r}: choose {list(self.POOLINGS)}")
        self.pooling = pooling
        self.members = list(members)
        if not weights:
            weights = [
                m.geometric_weight if pooling == "geometric" else m.ensemble_weight
                for m in self.members
            ]
        total = sum(weights)
        self.weights = [w / total for w in weights]
        kinds = [m.kind for m in self.members]
        for kind in confidence_members(confidence):
            if kind not in kinds:
                raise ValueError(f"ensemble confidence {kind!r} is not a member: choose {kinds}")
        self.confidence = confidence if isinstance(confidence, str | None) else list(confidence)
        # (a, b) of the IC sigmoid(a·margin + b), fitted on held-out rows (None: the margin)
        self.confidence_scale: tuple[float, float] | None = None
        # the register variables' prior over codes, fitted by training on labelled descriptions
        # (`autocode.train.fit_classifier`); over `classes`
        self.prior: CategoricalPrior | None = None
        # how often each code occurs in the traffic (`CodeFrequencies`), fitted by training
        # (`code_frequencies`), applied to the members that do not follow it; over `classes`
        self.frequencies: CodeFrequencies | None = None
        # the members' kinds whose scores already follow the code frequencies
        self._following = frozenset(m.kind for m in self.members if m.follows_frequencies)
        self.params = {
            "members": kinds,
            "weights": self.weights,
            "pooling": pooling,
            "confidence": confidence,
            **{f"{m.kind}.{k}": v for m in self.members for k, v in m.params.items()},
        }

    def fit(
        self, texts: Texts, codes: Sequence[str], weights: Sequence[float] | None = None
    ) -> EnsembleClassifier:
        for member in self.members:
            member.fit(texts, codes, weights)
        self.classes = sorted(set(self.members[0].classes))
        self._column_cache: dict = {}
        return self

    def pool(self, texts: Texts) -> tuple[np.ndarray, np.ndarray | None]:
        """The pooled probabilities and, with ``confidence``, the confidence members' margin for
        the pool's top-1 code of each row (None without ``confidence``)."""
        # a member that learnt no code (nearest descriptions without descriptions) is left out
        active = [(m, w) for m, w in zip(self.members, self.weights, strict=True) if m.classes]
        parts = (
            (m.kind, self._columns(m), m.scores(texts) * np.float32(m.temperature), w)
            for m, w in active
        )
        return self.pool_logits(
            len(texts),
            parts,
            sum(w for _, w in active),
            self.log_prior(texts),
            None if self.frequencies is None else self.frequencies.log_factors,
        )

    def log_prior(self, texts: Texts) -> np.ndarray | None:
        """The register prior's log factors of the rows (None: no prior, or no values)."""
        if self.prior is None or not isinstance(texts, ModelInput) or not texts.categorical:
            return None
        return self.prior.log_factors(texts.categorical, len(texts))

    def pool_logits(
        self,
        n: int,
        parts: Iterable[tuple[str, slice | np.ndarray, np.ndarray, float]],
        total: float,
        log_prior: np.ndarray | None = None,
        log_frequency: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """`pool` of members' calibrated scores (logits = scores × temperature) given as
        ``(kind, columns, logits, weight)``: ``columns`` place the member's classes among the
        ensemble's, ``total`` is the sum of the weights given (they are renormalised). Training
        pools the held-out scores of its cross-fitted models with it (`autocode.train`).
        ``log_prior`` (n × classes): log factors the pooled probabilities are multiplied by
        (then renormalised) before the top-1 code and its confidence margin are read: the
        register variables' prior (`CategoricalPrior`). ``log_frequency`` (classes): the code
        frequencies' log factors (`CodeFrequencies`), added to the logits of the members that
        do not follow how often codes occur (not the nearest descriptions), before pooling."""
        out = np.zeros((n, len(self.classes)), dtype=np.float32)
        wanted = set(confidence_members(self.confidence))  # `confidence` may be reassigned
        confident: dict[str, np.ndarray] = {}
        total = total or 1.0
        for kind, columns, logits, weight in parts:
            logits = self.pooled_logits(kind, columns, logits, log_frequency)
            weight = weight / total
            if self.pooling == "geometric":
                if not isinstance(columns, slice) and len(columns) < len(self.classes):
                    absent = np.ones(len(self.classes), dtype=bool)  # a code it never saw: p = 0
                    absent[columns] = False
                    out[:, absent] = -np.inf
                out[:, columns] += weight * logits
                proba = softmax(logits) if kind in wanted else None
            else:
                proba = softmax(logits)
                out[:, columns] += weight * proba
            if proba is not None and kind in wanted and kind not in confident:
                if isinstance(columns, slice):
                    confident[kind] = proba
                else:
                    confident[kind] = np.zeros((n, len(self.classes)), dtype=np.float32)
                    confident[kind][:, columns] = proba
        if self.pooling == "geometric" and n:
            out = softmax(out)
        if log_prior is not None and n:
            out *= np.exp(log_prior - log_prior.max(axis=1, keepdims=True))
            out /= out.sum(axis=1, keepdims=True)
        if not confident:
            return out, None
        top = out.argmax(axis=1)
        margins = [margin_at(proba, top) for proba in confident.values()]
        return out, np.prod(margins, axis=0) ** (1.0 / len(margins))

    def pooled_logits(
        self,
        kind: str,
        columns: slice | np.ndarray,
        logits: np.ndarray,
        log_frequency: np.ndarray | None,
    ) -> np.ndarray:
        """A member's logits as `pool_logits` pools them: with the code frequencies' log factors
        added unless the member already follows how often codes occur."""
        if log_frequency is None or kind in self._following:
            return logits
        return logits + log_frequency[columns]

    def _columns(self, member: Classifier) -> slice | np.ndarray:
        """Where ``member``'s classes sit among the ensemble's: all of them in order (a slice:
        no copy when pooling) or their indices; kept per member, as classes change only in fit."""
        cache = self.__dict__.setdefault("_column_cache", {})
        key = (id(member), len(member.classes), len(self.classes))
        if key not in cache:
            if member.classes == self.classes:
                cache[key] = slice(None)
            else:
                index = {c: i for i, c in enumerate(self.classes)}
                cache[key] = np.asarray([index[c] for c in member.classes], dtype=np.intp)
        return cache[key]

    def predict_proba(self, texts: Texts) -> np.ndarray:
        return self.with_confidence(*self.pool(texts))

    def with_confidence(self, out: np.ndarray, margin: np.ndarray | None) -> np.ndarray:
        """The pool's probabilities with the IC of its confidence margin (`with_confidence`)."""
        if margin is None or not len(out):
            return out
        return with_confidence(out, self.confidence_of(margin))

    def confidence_of(self, margin: np.ndarray) -> np.ndarray:
        """The IC given to a confidence margin: the margin itself, or its fitted logistic
        calibration sigmoid(a·margin + b) (`fit_confidence_scale`), an estimate of the
        probability that the top-1 code is right."""
        if self.confidence_scale is None:
            return margin
        a, b = self.confidence_scale
        return 1.0 / (1.0 + np.exp(-(a * np.asarray(margin, dtype=np.float64) + b)))

    def calibrate_confidence(self, texts: Texts, codes: Sequence[str]) -> None:
        """Fit the logistic map from the confidence member's margin to the probability that the
        pool's top-1 code is right, on held-out rows (none: no map)."""
        self.confidence_scale = None
        if self.confidence is None or not len(texts):
            return
        out, margin = self.pool(texts)
        assert margin is not None  # the pool has one with a confidence member
        top = np.asarray(self.classes)[out.argmax(axis=1)]
        self.confidence_scale = fit_confidence_scale(margin, top == np.asarray(codes))

    def save(self, directory: Path) -> None:
        if self.prior is not None:
            self.prior.save(directory / "prior")
        if self.frequencies is not None:
            self.frequencies.save(directory / "frequencies")
        for i, member in enumerate(self.members):
            sub = directory / f"member{i}"
            sub.mkdir()
            member.save(sub)
            (sub / "classifier.json").write_text(json.dumps(member.meta()))

    def meta(self) -> dict[str, Any]:
        return {
            **super().meta(),
            "weights": self.weights,
            "confidence": self.confidence,
            "confidence_scale": self.confidence_scale,
            "pooling": self.pooling,
            "prior": None if self.prior is None else list(self.prior.names),
            "frequencies": None if self.frequencies is None else self.frequencies.meta(),
        }

    @classmethod
    def load(cls, directory: Path, meta: Mapping[str, Any]) -> EnsembleClassifier:
        from autocode.model.kinds import CLASSIFIERS  # the members' kinds (a cycle at import)

        members = []
        for i in range(len(meta["params"]["members"])):
            sub = directory / f"member{i}"
            member_meta = json.loads((sub / "classifier.json").read_text())
            members.append(CLASSIFIERS[member_meta["kind"]].load(sub, member_meta))
        # models saved before `confidence` and `pooling` existed return the plain mean
        model = cls(members, meta["weights"], meta.get("confidence"), meta.get("pooling", "mean"))
        scale = meta.get("confidence_scale")
        model.confidence_scale = None if scale is None else (float(scale[0]), float(scale[1]))
        model.classes = list(meta["classes"])
        if meta.get("prior"):
            model.prior = CategoricalPrior.load(directory / "prior")
        if meta.get("frequencies"):
            model.frequencies = CodeFrequencies.load(directory / "frequencies")
        return model


def confidence_members(confidence: str | Sequence[str] | None) -> list[str]:
    """The member kinds of an ensemble's ``confidence`` (one kind, a list, or none)."""
    if confidence is None:
        return []
    return [confidence] if isinstance(confidence, str) else list(confidence)


#: The default model: fastText, TF-IDF and the nearest descriptions (which learns only from
#: labelled descriptions: at cold start the ensemble leaves it out). The e5 member is not in it:
#: it codes about 70 texts/s where the default must code ≥ 10,000 texts/s (batch) and answer
#: in ≤ 10 ms (API p99); what it adds to the quality is in docs/autocode.md ("Speed and
#: quality"). ``params: {members: {fasttext: {}, tfidf: {}, e5: {}}}`` gives it back.
DEFAULT_MEMBERS: dict[str, dict[str, Any]] = {"fasttext": {}, "tfidf": {}, "knn": {}}


def default_confidence(members: Mapping[str, Any]) -> str | list[str] | None:
    """The IC of an ensemble by default (measured in docs/autocode.md): TF-IDF's and e5's margins
    together when both are members, else TF-IDF's; ``confidence: null`` in a config gives the
    pool's own p1 - p2."""
    if "tfidf" in members and "e5" in members:
        return ["tfidf", "e5"]
    return "tfidf" if "tfidf" in members else None
