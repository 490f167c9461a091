"""Retraining, comparison and promotion against a real MLflow server (artifacts on SeaweedFS):
the challenger records the gold it was trained on, the comparison uses only rows neither model
saw, the decision and its evidence are in MLflow, and the champion moves only when the rule
says so; a failed training, an empty gold set, unknown codes and a dead MLflow change nothing."""

from __future__ import annotations

import json

import mlflow
import pytest
import yaml

from autocode.loop.gold import KEY, held_out, read_gold
from autocode.train import train

from ..conftest import free_port, run, small_config
from .conftest import LOOP_CODES, gold_table, write_gold

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

NAME = "autocode-loop-test"
HOLDOUT = 0.5


def config_file(tmp_path, nomenclatures_dir, **overrides) -> str:
    overrides.setdefault("only_codes", LOOP_CODES)
    raw = small_config(tmp_path, nomenclatures_dir, **overrides).to_dict()
    raw["mlflow"]["experiment"] = "autocode-loop-tests"
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


@pytest.fixture(scope="module")
def loop(tmp_path_factory, nomenclatures_dir, seaweedfs, mlflow_server, dev_rows):
    """A cold-start champion (v1) and the gold folder (dev1000 rows of the test divisions)."""
    patch = pytest.MonkeyPatch()
    for key, value in seaweedfs.items():
        if key != "bucket":
            patch.setenv(key, value)
    patch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    tmp = tmp_path_factory.mktemp("loop")
    config = small_config(tmp / "champion", nomenclatures_dir, only_codes=LOOP_CODES)
    config.mlflow.tracking_uri = mlflow_server
    config.mlflow.registered_model = NAME
    config.mlflow.experiment = "autocode-loop-tests"
    config.mlflow.alias = "champion"
    champion = train(config)
    table = gold_table(dev_rows)
    table.loc[0:2, "skipped"] = True
    table.loc[3, "code"] = "9999Z"
    gold = write_gold(tmp / "gold", table)
    yield {"champion": champion, "gold": gold, "table": table, "tmp": tmp}
    patch.undo()


def artifact(client, run_id: str, path: str, tmp_path) -> dict:
    with open(client.download_artifacts(run_id, path, str(tmp_path))) as handle:
        return json.load(handle)


def aliases() -> dict[str, str]:
    return dict(mlflow.MlflowClient().get_registered_model(NAME).aliases)


def test_retrain_compare_promote(
    loop, mlflow_env, monkeypatch, capsys, nomenclatures_dir, tmp_path
):
    client = mlflow.MlflowClient()
    champion = loop["champion"].model_version
    assert aliases() == {"champion": champion}

    # retrain: cold start + gold minus the hold-out, registered as @challenger
    cfg = config_file(tmp_path, nomenclatures_dir)
    code, out, err = run(
        monkeypatch, capsys, "retrain", "--name", NAME, "--gold", str(loop["gold"]),
        "--config", cfg, "--holdout", str(HOLDOUT), "--holdout-seed", "7", "--json",
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    challenger = result["version"]
    assert aliases() == {"champion": champion, "challenger": challenger}
    usable = len(loop["table"]) - 4  # 3 skipped, 1 unknown code
    assert result["gold_rows_trained"] + result["gold_rows_held_out"] == usable
    assert result["left_out"] == {"skipped": 3, "unknown code": 1}
    assert 0 <= result["metrics"]["gold_holdout_accuracy"] <= 1

    # the version and its run record the gold: files, counts, and the keys trained on
    version = client.get_model_version(NAME, challenger)
    assert version.run_id is not None
    assert version.tags["gold.rows_trained"] == str(result["gold_rows_trained"])
    assert version.tags["gold.holdout_seed"] == "7"
    assert len(json.loads(version.tags["gold.files"])) == 2
    record = artifact(client, version.run_id, "gold/gold.json", tmp_path)
    from autocode.train import load_nomenclature

    nomenclature, _ = load_nomenclature(
        small_config(tmp_path, nomenclatures_dir, only_codes=LOOP_CODES)
    )
    gold = read_gold([str(loop["gold"])], nomenclature)
    expected_out = held_out(gold.rows[KEY].tolist(), HOLDOUT, 7)
    assert set(record["trained_keys"]) == set(gold.rows[KEY][~expected_out])
    assert set(record["held_out_keys"]) == set(gold.rows[KEY][expected_out])
    assert not set(record["trained_keys"]) & set(record["held_out_keys"])
    run_data = client.get_run(version.run_id).data
    assert run_data.tags["gold.rows_held_out"] == str(result["gold_rows_held_out"])
    # the gold's register variable reaches the challenger's prior, as with `autocode train`
    from autocode.model import EnsembleClassifier, load_coder

    coder = load_coder(f"models:/{NAME}/{challenger}")
    assert "type_" in coder.categorical
    assert isinstance(coder.classifier, EnsembleClassifier) and coder.classifier.prior is not None
    # its code frequencies count each gold row by the campaign's design weight (the traffic
    # it stands for), not once
    frequencies = coder.classifier.frequencies
    weights = gold.rows.loc[~expected_out, "weight"].astype(float)
    assert frequencies is not None and frequencies.rows == pytest.approx(weights.sum())
    assert frequencies.rows != pytest.approx(len(weights))

    # compare only: evidence recorded, nothing moves
    code, out, err = run(
        monkeypatch, capsys, "compare", "--name", NAME, "--gold", str(loop["gold"]),
        "--min-rows", "10", "--json",
    )  # fmt: skip
    decision = json.loads(out)
    assert code == (0 if decision["decision"] == "promote" else 1), err
    assert aliases() == {"champion": champion, "challenger": challenger}
    assert decision["rows_compared"] == result["gold_rows_held_out"]  # champion saw no gold
    assert decision["champion_records_gold"] is False
    test = decision["mcnemar"]
    assert test["n10"] + test["n01"] <= decision["rows_compared"]
    assert decision["weighted"] is True
    promotions = client.get_experiment_by_name(f"{NAME}-promotions")
    assert promotions is not None
    evidence_run = client.get_run(decision["run_id"])
    assert evidence_run.info.experiment_id == promotions.experiment_id
    assert evidence_run.data.params["rule"] == "not-worse"
    assert evidence_run.data.metrics["mcnemar_n10"] == test["n10"]
    assert "accuracy_low" in decision["challenger_metrics"]
    stored = artifact(client, decision["run_id"], "decision.json", tmp_path)
    assert stored["decision"] == decision["decision"] and stored["reason"] == decision["reason"]
    assert set(stored["compared_keys"]) == set(record["held_out_keys"])
    tags = client.get_model_version(NAME, challenger).tags
    assert tags["promotion.run_id"] == decision["run_id"]

    # promote --gold with the default rule: the challenger (cold start + gold) is not worse
    code, out, err = run(
        monkeypatch, capsys, "promote", "--name", NAME, "--gold", str(loop["gold"]),
        "--min-rows", "10",
    )  # fmt: skip
    assert code == 0, err
    assert f"version {challenger} is now @champion" in err
    assert aliases() == {"champion": challenger, "challenger": challenger,
                         "previous-champion": champion}  # fmt: skip

    # a worse challenger (it knows division 56 only: wrong on every row of 10 and 47) is
    # refused: the champion stays
    weak = config_file(tmp_path / "weak", nomenclatures_dir, only_codes=["56"])
    code, out, err = run(
        monkeypatch, capsys, "retrain", "--name", NAME, "--gold", str(loop["gold"]),
        "--config", weak, "--holdout", str(HOLDOUT), "--holdout-seed", "7", "--json",
    )  # fmt: skip
    assert code == 0, err
    weak_result = json.loads(out)
    weak_version = weak_result["version"]
    assert weak_result["left_out"]["unknown code"] > 50  # the gold of 10 and 47: not its codes
    code, out, err = run(
        monkeypatch, capsys, "promote", "--name", NAME, "--gold", str(loop["gold"]),
        "--min-rows", "10", "--json",
    )  # fmt: skip
    refused = json.loads(out)
    assert code == 1, err
    assert refused["decision"] == "keep" and "less accurate" in refused["reason"]
    assert refused["mcnemar"]["p_challenger_worse"] < 0.05
    # both were trained with the same hold-out (same seed): compared on its rows
    assert refused["rows_compared"] == result["gold_rows_held_out"]
    assert refused["champion_records_gold"] and refused["challenger_records_gold"]
    assert aliases()["champion"] == challenger and aliases()["challenger"] == weak_version
    tags = client.get_model_version(NAME, weak_version).tags
    assert tags["promotion.decision"] == "keep"
    assert "less accurate" in tags["promotion.reason"]
    last = client.get_model_version(NAME, challenger).tags["promotion.last_challenge"]
    assert last.startswith(f"version {weak_version}: keep")

    # the rule "better" refuses a challenger equal to the champion in accuracy
    code, out, err = run(
        monkeypatch, capsys, "compare", "--name", NAME, "--gold", str(loop["gold"]),
        "--rule", "better", "--min-rows", "10", "--json",
    )  # fmt: skip
    assert code == 1 and json.loads(out)["decision"] == "keep"

    # too few rows neither saw: refused with the counts
    code, out, err = run(
        monkeypatch, capsys, "promote", "--name", NAME, "--gold", str(loop["gold"]),
        "--min-rows", "1000",
    )  # fmt: skip
    assert code == 2 and "gold rows neither model was trained on" in err
    assert aliases()["champion"] == challenger


def test_bad_inputs_change_nothing(
    loop, mlflow_env, monkeypatch, capsys, nomenclatures_dir, tmp_path
):
    client = mlflow.MlflowClient()
    current = aliases()
    if current.get("challenger") in (None, current["champion"]):  # a distinct challenger
        model = client.get_model_version(NAME, current["champion"])
        copy = mlflow.register_model(model.source, NAME)  # the same model, a new version
        client.set_registered_model_alias(NAME, "challenger", copy.version)
    before = aliases()
    cfg = config_file(tmp_path, nomenclatures_dir)

    # a challenger that fails to train (an invalid regularisation reaches the fit)
    broken = config_file(tmp_path / "broken", nomenclatures_dir, model="tfidf", params={"C": -1})
    code, _, err = run(
        monkeypatch, capsys, "retrain", "--name", NAME, "--gold", str(loop["gold"]),
        "--config", broken,
    )  # fmt: skip
    assert code == 2 and "training the challenger failed" in err and "no alias" in err
    assert aliases() == before

    # an empty gold set (every row skipped)
    empty = write_gold(tmp_path / "empty", loop["table"].head(6).assign(skipped=True), parts=1)
    code, _, err = run(
        monkeypatch, capsys, "retrain", "--name", NAME, "--gold", str(empty), "--config", cfg
    )
    assert code == 2 and "no usable gold row" in err and "6 skipped" in err
    code, _, err = run(monkeypatch, capsys, "promote", "--name", NAME, "--gold", str(empty))
    assert code == 2 and "no usable gold row" in err

    # gold whose codes are not in the nomenclature
    unknown = write_gold(
        tmp_path / "unknown", loop["table"].head(6).assign(code="9999Z", skipped=False), 1
    )
    code, _, err = run(
        monkeypatch, capsys, "retrain", "--name", NAME, "--gold", str(unknown), "--config", cfg
    )
    assert code == 2 and "6 unknown code" in err
    assert aliases() == before

    # MLflow down: said at once, nothing trained
    dead = f"http://127.0.0.1:{free_port()}"
    for command in (
        ["retrain", "--config", cfg],
        ["compare"],
        ["promote"],
    ):
        code, _, err = run(
            monkeypatch, capsys, command[0], "--name", NAME, "--gold", str(loop["gold"]),
            "--tracking-uri", dead, *command[1:],
        )  # fmt: skip
        assert code == 2 and f"MLflow is not reachable at {dead}" in err, err
    assert aliases() == before

    # bad rule and level
    code, _, err = run(
        monkeypatch, capsys, "compare", "--name", NAME, "--gold", str(loop["gold"]),
        "--rule", "maybe",
    )  # fmt: skip
    assert code == 2 and "choose from not-worse, better" in err
    code, _, err = run(
        monkeypatch, capsys, "promote", "--name", NAME, "--gold", str(loop["gold"]),
        "--version", "1",
    )  # fmt: skip
    assert code == 2 and "no --version" in err
    assert aliases() == before
