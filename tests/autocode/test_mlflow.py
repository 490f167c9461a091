"""Tracking, registry and promotion against a real MLflow server with artifacts on real S3."""

import sys

import mlflow
import pandas as pd
import pytest

from autocode import cli
from autocode.train import train

from .conftest import small_config

pytestmark = pytest.mark.slow

NAME = "autocode-naf-test"


@pytest.fixture(scope="module")
def registered(tmp_path_factory, nomenclatures_dir, seaweedfs, mlflow_server):
    """Two registered versions: v1 (ensemble) then v2 (a deliberately weak tf-idf)."""
    patch = pytest.MonkeyPatch()
    for key, value in seaweedfs.items():
        if key != "bucket":
            patch.setenv(key, value)
    patch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    tmp = tmp_path_factory.mktemp("registered")
    config = small_config(tmp / "one", nomenclatures_dir)
    config.mlflow.tracking_uri = mlflow_server
    config.mlflow.registered_model = NAME
    config.mlflow.experiment = "autocode-tests"
    first = train(config)
    weak = small_config(
        tmp / "two", nomenclatures_dir, model="tfidf", params={"C": 0.0005},
        cold_start_options={"exclusions": False},
    )  # fmt: skip
    weak.mlflow = config.mlflow
    second = train(weak)
    yield first, second
    patch.undo()


def test_run_logs_everything(registered, mlflow_env):
    first, _ = registered
    client = mlflow.MlflowClient()
    run = client.get_run(first.run_id)
    assert run.data.params["model"] == "ensemble"
    assert run.data.params["seed"] == "0"
    assert run.data.params["fasttext_threads"] == "1"
    assert run.data.tags["nomenclature_version"] == "rev2-2008"
    assert 0 < run.data.metrics["val_accuracy"] <= 1
    assert "val_coverage_at_90" in run.data.metrics
    assert run.inputs is not None
    dataset = run.inputs.dataset_inputs[0].dataset
    assert dataset.name == "training" and dataset.digest == first.coder.info["training_fingerprint"]
    artifacts = {a.path for a in client.list_artifacts(first.run_id)}
    assert {"config.yaml", "data", "figures", "evaluation"} <= artifacts
    figures = {a.path for a in client.list_artifacts(first.run_id, "figures/val")}
    assert "figures/val/automatic_coding_curve.png" in figures


def test_load_by_alias_and_promote(registered, mlflow_env, monkeypatch, capsys, tmp_path):
    first, second = registered
    client = mlflow.MlflowClient()
    assert client.get_model_version_by_alias(NAME, "challenger").version == second.model_version

    model = mlflow.pyfunc.load_model(f"models:/{NAME}@challenger")
    rows = pd.DataFrame({"text": ["boulangerie pâtisserie", "restaurant traditionnel"]})
    coded = model.predict(rows, params={"k": 2})
    assert list(coded.columns[:3]) == ["code_1", "proba_1", "label_1"]
    assert model.metadata.get_input_schema().input_names() == ["text"]

    def promote(*args):
        monkeypatch.setattr(sys, "argv", ["autocode", "promote", "--name", NAME, *args])
        try:
            cli.main()
            return 0, capsys.readouterr().err
        except SystemExit as exc:
            return exc.code, capsys.readouterr().err

    code, err = promote("--version", first.model_version)
    assert code == 0, err
    assert f"version {first.model_version} is now @champion" in err
    # the weak challenger does not beat the champion on validation accuracy
    code, err = promote("--if-better", "val_accuracy")
    assert code == 2 and "does not beat" in err
    champion = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    assert champion.metadata.run_id == first.run_id

    output = tmp_path / "coded.parquet"
    monkeypatch.setattr(sys, "argv", [
        "autocode", "predict", "--model", f"models:/{NAME}@champion",
        "--input", str(tmp_path / "in.csv"), "--output", str(output),
    ])  # fmt: skip
    rows.to_csv(tmp_path / "in.csv", index=False)
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 0
    assert pd.read_parquet(output)["code_1"].str.startswith(("10.", "56.")).all()

    code, err = promote("--source", "nope")
    assert code == 2 and "no alias @nope" in err
