"""Classifier kinds by name, and `make_classifier` (a classifier from a config's kind and
params)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from autocode.model.base import Classifier
from autocode.model.ensemble import DEFAULT_MEMBERS, EnsembleClassifier, default_confidence
from autocode.model.fasttext_model import FastTextClassifier
from autocode.model.nearest import NearestClassifier
from autocode.model.sentence import EmbeddingClassifier
from autocode.model.tfidf import TfidfClassifier

CLASSIFIERS: dict[str, type[Classifier]] = {
    c.kind: c
    for c in (
        FastTextClassifier,
        TfidfClassifier,
        EmbeddingClassifier,
        NearestClassifier,
        EnsembleClassifier,
    )
}


def make_classifier(kind: str, params: Mapping[str, Any] | None = None) -> Classifier:
    """A classifier from its kind and params; an ensemble takes ``members: {kind: params}``,
    ``weights`` (default: the members' ``ensemble_weight`` or ``geometric_weight``),
    ``pooling`` (``mean`` by default, or ``geometric``) and ``confidence`` (the member, or
    members, whose margin is the IC; default `default_confidence`)."""
    params = dict(params or {})
    if kind == "ensemble":
        members = params.get("members") or DEFAULT_MEMBERS
        confidence = params.get("confidence", default_confidence(members))
        return EnsembleClassifier(
            [make_classifier(k, p) for k, p in members.items()],
            params.get("weights"),
            confidence,
            params.get("pooling", "mean"),
        )
    if kind not in CLASSIFIERS:
        raise ValueError(f"unknown model kind {kind!r}; choose from {sorted(CLASSIFIERS)}")
    return CLASSIFIERS[kind](**params)
