import json
import sys

import mlflow
import pytest
import yaml

from autocode import cli
from autocode.train import ConfigError, TrainConfig
from autocode.tune import (
    SearchSpace,
    apply_params,
    argo_workflow,
    run_local,
    validate_workflow,
)

from .conftest import small_config


def test_grid_and_random_spaces():
    grid = SearchSpace.from_dict({"space": {"model": ["fasttext", "tfidf"], "params.C": [1, 2]}})
    assert len(grid.trials()) == 4
    assert grid.trials()[0] == {"model": "fasttext", "params.C": 1}
    space = {
        "method": "random", "trials": 5, "seed": 3,
        "space": {"params.lr": {"low": 0.1, "high": 1.0, "log": True}, "params.dim": [50, 100]},
    }  # fmt: skip
    draws = SearchSpace.from_dict(space).trials()
    assert len(draws) == 5 and draws == SearchSpace.from_dict(space).trials()
    assert all(0.1 <= d["params.lr"] <= 1.0 for d in draws)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"space": {"model": ["tfidf"]}, "objective": "examples50_accuracy"}, "never select"),
        ({"space": {"params.lr": {"low": 0.1, "high": 1}}}, "need method: random"),
        ({"space": {}}, "must map"),
        ({"space": {"model": ["tfidf"]}, "budget": 3}, "unknown keys"),
    ],
)
def test_invalid_spaces(raw, message):
    with pytest.raises(ConfigError, match=message):
        SearchSpace.from_dict(raw)


def test_apply_params_sets_dotted_keys():
    base = {"params": {"epoch": 5}, "model": "fasttext"}
    assert apply_params(base, {"params.lr": 0.2, "model": "tfidf"}) == {
        "params": {"epoch": 5, "lr": 0.2}, "model": "tfidf"
    }  # fmt: skip
    assert base == {"params": {"epoch": 5}, "model": "fasttext"}


def test_local_kfold_tuning(tmp_path, nomenclatures_dir, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    search = SearchSpace.from_dict(
        {"space": {"params.C": [0.001, 1.0]}, "objective": "cv_accuracy", "folds": 2}
    )
    base = small_config(tmp_path, nomenclatures_dir, model="tfidf", params={})
    outcome = run_local(search, base, workers=2)
    assert [t.index for t in outcome.trials] == [0, 1]
    assert outcome.best.params == {"params.C": 1.0}
    assert outcome.best_config.params["C"] == 1.0
    assert outcome.parent_run_id is None


@pytest.mark.slow
def test_nested_runs_in_mlflow(tmp_path, nomenclatures_dir, mlflow_env, monkeypatch, capsys):
    config = small_config(tmp_path, nomenclatures_dir, model="tfidf", params={})
    config.mlflow.experiment = "autocode-tune-tests"
    config_path = tmp_path / "train.yaml"
    config_path.write_text(yaml.safe_dump(config.to_dict()))
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"space": {"params.C": [0.01, 1.0]}}))
    best = tmp_path / "best.yaml"
    monkeypatch.setattr(sys, "argv", [
        "autocode", "tune", "--space", str(space), "--config", str(config_path),
        "--workers", "2", "--best-config", str(best),
    ])  # fmt: skip
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 0, capsys.readouterr().err
    assert TrainConfig.from_yaml(best).params == {"C": 1.0}
    experiment = mlflow.get_experiment_by_name("autocode-tune-tests")
    assert experiment is not None
    runs = mlflow.search_runs([experiment.experiment_id], output_format="list")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 2
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert parents[0].data.metrics["best_val_accuracy"] == max(
        c.data.metrics["val_accuracy"] for c in children
    )
    assert not any(k.startswith("labelled") for c in children for k in c.data.metrics)


def test_argo_manifest(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://s3.example:8333")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "must-not-leak")
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"model": "fasttext", "evaluation": ["test.csv"]}))
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"space": {"params.epoch": [10, 20, 30]}}))
    manifest = tmp_path / "wf.yaml"
    monkeypatch.setattr(sys, "argv", [
        "autocode", "tune", "--space", str(space), "--config", str(config), "--backend", "argo",
        "--manifest", str(manifest), "--image", "registry.example/autocode:1.0",
        "--tracking-uri", "http://mlflow.example:5000",
    ])  # fmt: skip
    with pytest.raises(SystemExit):
        cli.main()
    text = manifest.read_text()
    assert "must-not-leak" not in text
    workflow = yaml.safe_load(text)
    validate_workflow(workflow)
    templates = {t["name"]: t for t in workflow["spec"]["templates"]}
    task = templates["tune"]["dag"]["tasks"][0]
    assert task["template"] == "train"
    configs = [TrainConfig.from_dict(json.loads(item)) for item in task["withItems"]]
    assert [c.params["epoch"] for c in configs] == [10, 20, 30]
    assert all(c.evaluation == [] for c in configs)  # test sets never run in trials
    container = templates["train"]["container"]
    assert container["image"] == "registry.example/autocode:1.0"
    assert "autocode train --config" in container["args"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["MLFLOW_TRACKING_URI"]["value"] == "http://mlflow.example:5000"
    assert env["AWS_ENDPOINT_URL"]["value"] == "http://s3.example:8333"
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "autocode-s3"


def test_invalid_manifest_is_rejected():
    base = TrainConfig.from_dict({"mlflow": {"tracking_uri": "http://mlflow:5000"}})
    workflow = yaml.safe_load(
        argo_workflow(SearchSpace.from_dict({"space": {"seed": [1]}}), base).to_yaml()
    )
    validate_workflow(workflow)
    with pytest.raises(ValueError, match="not in the Argo schema"):
        validate_workflow({**workflow, "spec": {**workflow["spec"], "entrypiont": "x"}})
    with pytest.raises(ValueError, match="entrypoint"):
        validate_workflow({**workflow, "spec": {**workflow["spec"], "entrypoint": "nope"}})
    with pytest.raises(ValueError):
        validate_workflow({**workflow, "spec": {"templates": "not a list"}})
    with pytest.raises(ConfigError, match="tracking URI"):
        argo_workflow(SearchSpace.from_dict({"space": {"seed": [1]}}), TrainConfig())
