"""Hyper-parameter search: a YAML search space → trials run in a bounded process pool (nested
MLflow runs under one parent), or an Argo Workflows manifest fanning the trials out.

The objective is always a validation metric (``val_*``: the held-out split of the training
data) or a k-fold CV metric (``cv_*``): evaluation sets listed in the training config are test
sets and are never computed, let alone used, by a trial.

Search space file::

    method: grid            # grid | random
    trials: 8               # random only: how many draws
    seed: 0
    objective: val_accuracy # val_<metric> or cv_<metric> (then `folds` is used)
    folds: 3
    space:                  # dotted keys into the training config
      model: [fasttext, tfidf]
      params.epoch: [50, 100]
      params.lr: {low: 0.1, high: 1.0, log: true}   # random only: a continuous range
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import multiprocessing
import os
import random
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from autocode.train import ConfigError, TrainConfig, cross_validate, fit_coder, load_inputs


@dataclass
class SearchSpace:
    space: dict[str, Any]
    method: str = "grid"
    trials_count: int = 8
    seed: int = 0
    objective: str = "val_accuracy"
    folds: int = 3

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> SearchSpace:
        raw = dict(raw)
        known = {"space", "method", "trials", "seed", "objective", "folds"}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"search space: unknown keys {unknown}; known: {sorted(known)}")
        if not isinstance(raw.get("space"), Mapping) or not raw["space"]:
            raise ConfigError("search space: `space` must map config keys to value lists")
        search = cls(
            space=dict(raw["space"]),
            method=raw.get("method", "grid"),
            trials_count=int(raw.get("trials", 8)),
            seed=int(raw.get("seed", 0)),
            objective=raw.get("objective", "val_accuracy"),
            folds=int(raw.get("folds", 3)),
        )
        if search.method not in ("grid", "random"):
            raise ConfigError("search space: method must be grid or random")
        if not search.objective.startswith(("val_", "cv_")):
            raise ConfigError(
                f"objective {search.objective!r}: choose a validation (val_*) or "
                "cross-validation (cv_*) metric; test sets never select a model"
            )
        for key, values in search.space.items():
            if isinstance(values, Mapping) and search.method == "grid":
                raise ConfigError(f"space.{key}: ranges need method: random; give a list")
            if not isinstance(values, list | Mapping):
                raise ConfigError(f"space.{key}: give a list of values or a {{low, high}} range")
        return search

    @classmethod
    def from_yaml(cls, path: str | Path) -> SearchSpace:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"search space file not found: {path}")
        return cls.from_dict(yaml.safe_load(path.read_text()) or {})

    def trials(self) -> list[dict[str, Any]]:
        """The parameter sets to try (dotted key → value), in a reproducible order."""
        keys = list(self.space)
        if self.method == "grid":
            return [
                dict(zip(keys, combo, strict=True))
                for combo in itertools.product(*(self.space[k] for k in keys))
            ]
        rng = random.Random(self.seed)
        return [{k: _draw(self.space[k], rng) for k in keys} for _ in range(self.trials_count)]


def _draw(values: Any, rng: random.Random) -> Any:
    if isinstance(values, list):
        return rng.choice(values)
    low, high = float(values["low"]), float(values["high"])
    if values.get("log"):
        value = math.exp(rng.uniform(math.log(low), math.log(high)))
    else:
        value = rng.uniform(low, high)
    return round(value) if values.get("integer") else value


def apply_params(base: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` (a config dict) with each dotted key of ``params`` set."""
    config = copy.deepcopy(dict(base))
    for dotted, value in params.items():
        node = config
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"space key {dotted!r}: {part!r} is not a mapping")
        node[last] = value
    return config


def trial_config(base: TrainConfig, params: Mapping[str, Any]) -> TrainConfig:
    """The config of one trial: no evaluation (test) sets, no model registration."""
    raw = apply_params(base.to_dict(), params)
    raw["evaluation"] = []
    raw["mlflow"] = {**raw["mlflow"], "registered_model": None}
    return TrainConfig.from_dict(raw)


@dataclass
class Trial:
    index: int
    params: dict[str, Any]
    score: float
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class TuneOutcome:
    trials: list[Trial]
    best: Trial
    best_config: TrainConfig
    parent_run_id: str | None = None


def run_trial(
    index: int,
    params: dict[str, Any],
    base: dict[str, Any],
    search: dict[str, Any],
    tracking_uri: str | None,
    parent_run_id: str | None,
) -> Trial:
    """One trial (runs in a worker process): fit, score on validation or k-fold CV, log."""
    space = SearchSpace.from_dict(search)
    config = trial_config(TrainConfig.from_dict(base), params)
    if space.objective.startswith("cv_"):
        metrics = {f"cv_{k}": v for k, v in cross_validate(config, space.folds).metrics().items()}
    else:
        inputs = load_inputs(config)
        _, validation, _ = fit_coder(
            dataclass_replace(config, refit=False), inputs.nomenclature, inputs.table
        )
        if validation is None:
            raise ConfigError("objective val_*: set validation_fraction > 0")
        metrics = {f"val_{k}": v for k, v in validation.metrics.items()}
    if space.objective not in metrics:
        raise ConfigError(f"objective {space.objective!r} not among {sorted(metrics)}")
    if tracking_uri:
        import mlflow

        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_experiment(config.mlflow.experiment)
        with mlflow.start_run(run_name=f"trial-{index}", parent_run_id=parent_run_id):
            mlflow.log_params({k: str(v) for k, v in params.items()})
            mlflow.log_metrics(metrics)
    return Trial(index, params, metrics[space.objective], metrics)


def dataclass_replace(config: TrainConfig, **changes: Any) -> TrainConfig:
    import dataclasses

    return dataclasses.replace(config, **changes)


def run_local(
    search: SearchSpace,
    base: TrainConfig,
    workers: int = 2,
    on_trial: Callable[[Trial], None] | None = None,
) -> TuneOutcome:
    """All trials in a pool of at most ``workers`` processes; the best has the highest score."""
    trials = search.trials()
    if not trials:
        raise ConfigError("the search space has no trial")
    tracking_uri = base.mlflow.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    search_raw = {
        "space": search.space,
        "method": search.method,
        "trials": search.trials_count,
        "seed": search.seed,
        "objective": search.objective,
        "folds": search.folds,
    }
    parent = None
    if tracking_uri:
        import mlflow

        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_experiment(base.mlflow.experiment)
        parent = mlflow.start_run(run_name=base.mlflow.run_name or "tune")
        mlflow.log_dict(search_raw, "search_space.yaml")
        mlflow.log_dict(base.to_dict(), "base_config.yaml")
    done: list[Trial] = []
    try:
        # spawn: fastText and BLAS threads do not survive fork safely
        context = multiprocessing.get_context("spawn")
        workers = max(1, min(workers, len(trials)))
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = [
                pool.submit(
                    run_trial,
                    i,
                    p,
                    base.to_dict(),
                    search_raw,
                    tracking_uri,
                    parent.info.run_id if parent else None,
                )
                for i, p in enumerate(trials)
            ]
            for future in as_completed(futures):
                trial = future.result()
                done.append(trial)
                if on_trial:
                    on_trial(trial)
        done.sort(key=lambda t: t.index)
        best = max(done, key=lambda t: (t.score, -t.index))
        if parent is not None:
            import mlflow

            mlflow.log_params({f"best.{k}": str(v) for k, v in best.params.items()})
            mlflow.log_metric(f"best_{search.objective}", best.score)
            mlflow.set_tag("best_trial", str(best.index))
    finally:
        if parent is not None:
            import mlflow

            mlflow.end_run()
    best_config = TrainConfig.from_dict(apply_params(base.to_dict(), best.params))
    return TuneOutcome(done, best, best_config, parent.info.run_id if parent else None)


# -- Argo Workflows -------------------------------------------------------------------------------
FORWARDED_ENV = ("MLFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION")
S3_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def argo_workflow(
    search: SearchSpace,
    base: TrainConfig,
    image: str = "autocode:latest",
    namespace: str | None = None,
    secret: str = "autocode-s3",  # noqa: S107 (a Kubernetes Secret name, not a password)
    parallelism: int = 4,
):
    """An Argo `Workflow` (hera) fanning out one container per trial, each running the same
    entry point, ``autocode train --config``, with the trial's config and the MLflow / S3
    environment (S3 keys from a Kubernetes Secret, never inlined)."""
    from hera.workflows import DAG, Container, Env, Parameter, Workflow
    from hera.workflows.models import EnvVar, EnvVarSource, SecretKeySelector

    tracking_uri = base.mlflow.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not tracking_uri:
        raise ConfigError("the argo backend needs an MLflow tracking URI (--tracking-uri)")
    configs = []
    for index, params in enumerate(search.trials()):
        config = trial_config(base, params)
        config.refit = False
        config.mlflow.run_name = f"trial-{index}"
        config.mlflow.tracking_uri = tracking_uri
        config.output = f"/tmp/autocode/trial-{index}"  # noqa: S108 (inside the container)
        configs.append(json.dumps(config.to_dict(), sort_keys=True))
    env: list[Any] = [Env(name="MLFLOW_TRACKING_URI", value=tracking_uri)]
    env += [Env(name=name, value=os.environ[name]) for name in FORWARDED_ENV if name in os.environ]
    env += [
        EnvVar(
            name=key,
            value_from=EnvVarSource(secret_key_ref=SecretKeySelector(name=secret, key=key)),
        )
        for key in S3_SECRET_KEYS
    ]
    with Workflow(
        generate_name="autocode-tune-",
        entrypoint="tune",
        namespace=namespace,
        parallelism=parallelism,
        labels={"app.kubernetes.io/name": "autocode", "autocode/step": "tune"},
    ) as workflow:
        train = Container(
            name="train",
            image=image,
            inputs=[Parameter(name="config")],
            command=["sh", "-c"],
            args=[
                'printf "%s" "$AUTOCODE_CONFIG" > /tmp/config.yaml && '
                "autocode train --config /tmp/config.yaml"
            ],
            env=[*env, Env(name="AUTOCODE_CONFIG", value="{{inputs.parameters.config}}")],
        )
        with DAG(name="tune"):
            train(name="trial", arguments={"config": "{{item}}"}, with_items=configs)
    return workflow


def validate_workflow(manifest: Mapping[str, Any]) -> None:
    """Validate a manifest against Argo's schema as generated into hera's models (the
    ``io.argoproj.workflow.v1alpha1`` OpenAPI definitions), strictly: a key the schema does not
    know is an error, and the entrypoint and every task's template must exist."""
    from hera.workflows.models import Workflow as WorkflowModel

    if manifest.get("apiVersion") != "argoproj.io/v1alpha1" or manifest.get("kind") != "Workflow":
        raise ValueError("not an argoproj.io/v1alpha1 Workflow")
    model = WorkflowModel.model_validate(manifest)
    dumped = model.model_dump(by_alias=True, exclude_none=True, mode="json")
    unknown = _unknown_keys(manifest, dumped, "")
    if unknown:
        raise ValueError(f"keys not in the Argo schema: {unknown}")
    templates = {t.name for t in model.spec.templates or []}
    if model.spec.entrypoint not in templates:
        raise ValueError(f"entrypoint {model.spec.entrypoint!r} is not a template")
    for template in model.spec.templates or []:
        for task in (template.dag.tasks if template.dag else []) or []:
            if task.template not in templates:
                raise ValueError(f"task {task.name!r} uses unknown template {task.template!r}")


def _unknown_keys(raw: Any, known: Any, path: str) -> list[str]:
    if isinstance(raw, Mapping):
        known = known if isinstance(known, Mapping) else {}
        out = []
        for key, value in raw.items():
            if key not in known:
                out.append(f"{path}.{key}".lstrip("."))
            else:
                out += _unknown_keys(value, known[key], f"{path}.{key}")
        return out
    if isinstance(raw, list) and isinstance(known, list):
        return [
            u
            for i, (a, b) in enumerate(zip(raw, known, strict=False))
            for u in _unknown_keys(a, b, f"{path}[{i}]")
        ]
    return []
