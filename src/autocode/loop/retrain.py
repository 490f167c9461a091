"""``autocode retrain``: train a challenger on the cold start and all gold so far, minus a
seeded hold-out of gold descriptions it is not trained on, track it in MLflow and register it
as ``@challenger``, its run and version recording which gold files and rows it was trained on.

Nothing moves ``@champion`` here; a training that fails leaves every alias as it was (the
alias is set last, after the version is registered and tagged)."""

from __future__ import annotations

import copy
import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from autocode import data as datamod
from autocode.errors import UserError
from autocode.loop.gold import KEY, Gold, design_weight_column, held_out, read_gold
from autocode.loop.tracking import (
    GOLD_RECORD,
    TAG_PREFIX,
    check_reachable,
    client,
    tracking_uri,
)
from autocode.train import DatasetConfig, TrainConfig, TrainResult, load_nomenclature, train

DEFAULT_HOLDOUT = 0.2
GOLD_SOURCE = "gold"
HOLDOUT_NAME = "gold_holdout"


class RetrainError(UserError, RuntimeError):
    """The challenger could not be made; every alias is as it was."""


@dataclass
class RetrainResult:
    train: TrainResult
    gold: Gold
    trained_rows: int
    holdout_rows: int
    tags: dict[str, str]
    alias: str


def retrain(
    config: TrainConfig,
    gold_uris: Sequence[str],
    registered_model: str,
    holdout_share: float = DEFAULT_HOLDOUT,
    holdout_seed: int = 0,
    alias: str = "challenger",
    progress: Callable[[str], None] | None = None,
) -> RetrainResult:
    step = progress or (lambda message: None)
    if not registered_model:
        raise RetrainError("give the registered model's name (--name)")
    config = copy.deepcopy(config)
    uri = tracking_uri(config.mlflow.tracking_uri)
    check_reachable(uri)  # before any training: a dead server is said at once
    nomenclature, _ = load_nomenclature(config)
    step("reading the gold standard")
    gold = read_gold(gold_uris, nomenclature, [*config.categorical, *_prior_variables(config)])
    inputs = [*config.categorical, *_given(gold.rows, _prior_variables(config))]
    step(gold.summary())
    holdout = held_out(gold.rows[KEY].tolist(), holdout_share, holdout_seed)
    trained, kept_out = gold.rows[~holdout], gold.rows[holdout]
    if trained.empty:
        raise RetrainError(
            f"all {len(gold.rows)} gold rows fall in the hold-out (share {holdout_share}): "
            "nothing to fold into training; lower --holdout or annotate more"
        )
    step(f"training on {len(trained)} gold rows; {len(kept_out)} held out (seed {holdout_seed})")
    # the campaign's design weight (the traffic each row stands for): the code frequencies
    # learnt from the gold count rows by it, as the traffic would (docs/autocode.md)
    weight = design_weight_column(gold.rows)
    columns = [datamod.TEXT, datamod.CODE, *inputs, *([weight] if weight else [])]
    with tempfile.TemporaryDirectory(prefix="autocode-retrain-") as tmp:
        train_file = Path(tmp) / "gold_train.parquet"
        trained[columns].to_parquet(train_file, index=False)
        config.train = [
            *config.train,
            DatasetConfig(
                str(train_file), datamod.TEXT, datamod.CODE, GOLD_SOURCE, weight_column=weight or ""
            ),
        ]
        if len(kept_out):
            holdout_file = Path(tmp) / "gold_holdout.parquet"
            kept_out[columns].to_parquet(holdout_file, index=False)
            config.evaluation = [
                *config.evaluation,
                DatasetConfig(str(holdout_file), datamod.TEXT, datamod.CODE, HOLDOUT_NAME),
            ]
        config.mlflow.tracking_uri = uri
        config.mlflow.registered_model = registered_model
        config.mlflow.alias = None  # set below, once the version records its gold
        config.mlflow.run_name = config.mlflow.run_name or f"retrain-{registered_model}"
        try:
            result = train(config, progress=step)
        except UserError:
            raise
        except Exception as exc:  # a failed fit: the aliases were not touched
            raise RetrainError(
                f"training the challenger failed ({type(exc).__name__}: {exc}); "
                "no alias was changed"
            ) from exc
    files = sorted({f["uri"] for f in gold.files})
    tags = {
        f"{TAG_PREFIX}files": json.dumps(files)[:5000],
        f"{TAG_PREFIX}file_fingerprints": ",".join(f["fingerprint"] for f in gold.files)[:5000],
        f"{TAG_PREFIX}rows_trained": str(len(trained)),
        f"{TAG_PREFIX}rows_held_out": str(len(kept_out)),
        f"{TAG_PREFIX}holdout_share": str(holdout_share),
        f"{TAG_PREFIX}holdout_seed": str(holdout_seed),
        f"{TAG_PREFIX}left_out": json.dumps(gold.left_out),
        f"{TAG_PREFIX}record": GOLD_RECORD,
    }
    record = {
        "files": gold.files,
        "left_out": gold.left_out,
        "holdout_share": holdout_share,
        "holdout_seed": holdout_seed,
        "trained_keys": sorted(set(trained[KEY])),
        "held_out_keys": sorted(set(kept_out[KEY])),
    }
    mlflow_client = client(uri)
    try:
        mlflow_client.log_dict(result.run_id, record, GOLD_RECORD)
        for key, value in tags.items():
            mlflow_client.set_tag(result.run_id, key, value)
            mlflow_client.set_model_version_tag(registered_model, result.model_version, key, value)
        mlflow_client.set_registered_model_alias(registered_model, alias, result.model_version)
    except Exception as exc:
        raise RetrainError(
            f"version {result.model_version} of {registered_model} was registered but its gold "
            f"record could not be written ({exc}); @{alias} was not moved"
        ) from exc
    step(f"registered {registered_model} version {result.model_version} as @{alias}")
    return RetrainResult(result, gold, len(trained), len(kept_out), tags, alias)


def _prior_variables(config: TrainConfig) -> list[str]:
    """The register prior's variables that are not already categorical inputs."""
    prior = config.categorical_prior or {}
    return [v for v in prior.get("variables", []) if v not in config.categorical]


def _given(rows: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    """The ``columns`` that have a value in some row (the gold files had them)."""
    return [c for c in columns if rows[c].fillna("").astype(str).str.strip().ne("").any()]
