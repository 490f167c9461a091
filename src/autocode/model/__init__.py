"""Classifiers, the `Coder` that turns raw rows into coded rows, and its MLflow packaging.

Every consumer (training evaluation, batch coding, the API) goes through `Coder`: raw text and
categorical variables in, calibrated probabilities out, then the one ranking (`rank`: top-k
codes, IC = p1 - p2, the automatic decision). Preprocessing happens inside, so nobody can feed a
model text normalised differently from its training data.

Modules: `maths` (softmax, temperatures, margins, IC rescaling), `ranking`, `base` (the
classifier contract), one module per member kind (`fasttext_model`, `tfidf`, `sentence`,
`ensemble`), `register` (the register variables' prior the ensemble multiplies its pool by),
`kinds` (kinds by name), `coder`, `packaging` (MLflow, `load_coder`).
"""

from autocode.model.base import Classifier, ModelInput, Texts
from autocode.model.coder import FORMAT_VERSION, Coder
from autocode.model.ensemble import (
    DEFAULT_MEMBERS,
    EnsembleClassifier,
    confidence_members,
    default_confidence,
)
from autocode.model.fasttext_model import FastTextClassifier, zeroed_allocations
from autocode.model.kinds import CLASSIFIERS, make_classifier
from autocode.model.maths import (
    MIN_CONFIDENCE,
    fit_confidence_scale,
    fit_temperature,
    margin_at,
    softmax,
    with_confidence,
)
from autocode.model.nearest import NearestClassifier
from autocode.model.packaging import (
    ModelLoadError,
    input_example,
    load_coder,
    pyfunc_arguments,
    save_pyfunc,
)
from autocode.model.ranking import Ranking, rank
from autocode.model.register import REGISTER_VARIABLES, CategoricalPrior
from autocode.model.sentence import EmbeddingClassifier
from autocode.model.tfidf import NgramTfidf, TfidfClassifier, TfidfFeatures, compact_weights

__all__ = [
    "CLASSIFIERS",
    "DEFAULT_MEMBERS",
    "FORMAT_VERSION",
    "MIN_CONFIDENCE",
    "REGISTER_VARIABLES",
    "CategoricalPrior",
    "Classifier",
    "Coder",
    "EmbeddingClassifier",
    "EnsembleClassifier",
    "FastTextClassifier",
    "ModelInput",
    "ModelLoadError",
    "NearestClassifier",
    "NgramTfidf",
    "Ranking",
    "Texts",
    "TfidfClassifier",
    "TfidfFeatures",
    "compact_weights",
    "confidence_members",
    "default_confidence",
    "fit_confidence_scale",
    "fit_temperature",
    "input_example",
    "load_coder",
    "make_classifier",
    "margin_at",
    "pyfunc_arguments",
    "rank",
    "save_pyfunc",
    "softmax",
    "with_confidence",
    "zeroed_allocations",
]
