"""The loop end to end (issue 19's acceptance), with the real services and the real CLI entry
points: a cold-start model registered as @champion is served by the API (``python -m
autocode.serve``, following the alias with a short poll interval); descriptions of dev1000
(a seeded split: the other rows are a held-out set never shown to the loop) are replayed
through it, the prediction log is shipped to SeaweedFS and compacted (``logs compact``); a
campaign is drawn (``annotate sample``) and created in a real Label Studio (``annotate
create``); the test plays the annotators through Label Studio's API with the file's expert
codes; ``annotate export`` writes the gold to SeaweedFS; ``retrain`` and ``promote --gold``
(which must promote); the running API then serves the new version and its top-1 accuracy on
the held-out rows, measured through the API, is higher than the champion's was. The figures
are printed and saved in test-artifacts/loop-end-to-end.json.

The models are those of test_retrain_promote.py (divisions 10, 56 and 47: 104 rows of
dev1000 fall in them, the small fastText + TF-IDF ensemble): the loop's statistics, not the
model's size, are what is tested, and a model of the whole nomenclature would take minutes
to train twice on a 2-core machine."""

from __future__ import annotations

import json
import os
import time

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest

from autocode.annotate.labelstudio import LabelStudio
from autocode.train import train

from ..conftest import REPO, run, small_config
from ..serve.conftest import Credentials, ServerProcess, s3_records
from .conftest import DEV1000, LOOP_CODES
from .test_retrain_promote import config_file

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

NAME = "autocode-e2e-test"
SEED = 19
HELD_OUT_SHARE = 0.4
ARTIFACT = REPO / "test-artifacts" / "loop-end-to-end.json"


def split_dev1000(naf2008) -> tuple[pd.DataFrame, pd.DataFrame]:
    """dev1000's distinct descriptions of the models' divisions, expert codes in the
    nomenclature's form, split by a seeded permutation: (replayed, held out)."""
    table = pd.read_csv(DEV1000, dtype=str, keep_default_na=False)
    table = table[table["code"].str[:2].isin(LOOP_CODES)].copy()
    table["code"] = table["code"].map(naf2008.find)
    table = table[table["code"].notna()].drop_duplicates("text_description")
    order = np.random.default_rng(SEED).permutation(len(table))
    table = table.iloc[order].reset_index(drop=True)
    cut = round(len(table) * HELD_OUT_SHARE)
    return table.iloc[cut:].reset_index(drop=True), table.iloc[:cut].reset_index(drop=True)


def predict(client: httpx.Client, rows: pd.DataFrame) -> tuple[list[str], set[str]]:
    """Top-1 codes of ``rows`` from the API, and the versions that answered."""
    items = [{"text": text} for text in rows["text_description"]]  # the models use no input
    response = client.post("/predict", json={"items": items, "k": 2})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    return [r["predictions"][0]["code"] for r in results], {r["model"]["version"] for r in results}


def accuracy(client: httpx.Client, rows: pd.DataFrame) -> tuple[float, str, np.ndarray]:
    """Top-1 accuracy on ``rows`` through the API, the version that answered, and which rows
    it got right."""
    codes, versions = predict(client, rows)
    assert len(versions) == 1, versions
    right = np.array(codes) == rows["code"].to_numpy()
    return float(right.mean()), versions.pop(), right


def annotate(ls: LabelStudio, task: dict, code: str, naf) -> None:
    """What an expert does in the task page: picks the code in the taxonomy."""
    path = [*naf.ancestors(code)[::-1], code]
    value = {"taxonomy": [path]}
    result = [{"from_name": "code", "to_name": "text", "type": "taxonomy", "value": value}]
    ls.request(
        "POST",
        f"/api/tasks/{task['id']}/annotations/",
        json={"result": result, "was_cancelled": False},
    )


def test_loop_end_to_end(
    label_studio, seaweedfs, mlflow_server, mlflow_env, nomenclatures_dir, naf2008,
    monkeypatch, capsys, tmp_path,
):  # fmt: skip
    started = time.monotonic()
    replayed, held = split_dev1000(naf2008)
    assert len(replayed) >= 50 and len(held) >= 35

    # -- the cold-start champion, served by the API (hot reload) --------------------------------
    config = small_config(tmp_path / "champion", nomenclatures_dir, only_codes=LOOP_CODES)
    config.mlflow.tracking_uri = mlflow_server
    config.mlflow.registered_model = NAME
    config.mlflow.experiment = "autocode-e2e-tests"
    config.mlflow.alias = "champion"
    champion = train(config).model_version
    client = mlflow.MlflowClient()
    assert dict(client.get_registered_model(NAME).aliases) == {"champion": champion}

    env = {k: v for k, v in seaweedfs.items() if k != "bucket"}
    bucket = seaweedfs["bucket"]
    credentials = Credentials(tmp_path / "credentials")
    server = ServerProcess(
        ["--model", f"models:/{NAME}@champion", "--log-dir", str(tmp_path / "spool")],
        {
            **{k: v for k, v in os.environ.items() if not k.startswith("AUTOCODE_API_")},
            **env,
            "MLFLOW_TRACKING_URI": mlflow_server,
            "AUTOCODE_API_API_KEYS_FILE": str(credentials.keys_file),
            "AUTOCODE_API_POLL_INTERVAL_S": "0.5",
            "AUTOCODE_API_LOG_S3_URI": f"s3://{bucket}/e2e-log",
            "AUTOCODE_API_LOG_SEGMENT_MAX_AGE_S": "0.5",
            "AUTOCODE_API_LOG_SHIP_INTERVAL_S": "0.5",
        },
        tmp_path / "server.log",
    )
    api = None
    try:
        server.start()
        assert server.wait_ready(timeout=180)["model"]["version"] == champion
        api = httpx.Client(base_url=server.url, headers=credentials.headers, timeout=60)

        # the champion's accuracy on the held-out rows, before (their predictions are logged
        # too, but only the replayed window below is sampled)
        before, version, right_before = accuracy(api, held)
        assert version == champion

        # -- replay: each description 1 to 4 times (traffic), in batches --------------------------
        rng = np.random.default_rng(SEED)
        traffic = replayed.loc[replayed.index.repeat(rng.integers(1, 5, len(replayed)))]
        traffic = traffic.sample(frac=1, random_state=SEED)
        window_start = pd.Timestamp.now(tz="UTC").ceil("s") + pd.Timedelta(seconds=1)
        time.sleep((window_start - pd.Timestamp.now(tz="UTC")).total_seconds())  # after those
        answered = 0
        for start in range(0, len(traffic), 50):
            codes, versions = predict(api, traffic.iloc[start : start + 50])
            assert versions == {champion}
            answered += len(codes)
        window_end = pd.Timestamp.now(tz="UTC").ceil("s") + pd.Timedelta(seconds=1)
        assert answered == len(traffic) >= 150

        # the log reaches SeaweedFS (segments sealed and shipped), then is compacted
        deadline = time.monotonic() + 60
        while True:
            _, records = s3_records(env, bucket, "e2e-log/")
            if len(records) >= len(traffic) + len(held) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert len(records) >= len(traffic) + len(held), "the prediction log was not shipped"
        parquet = f"s3://{bucket}/e2e-log-parquet"
        code, out, err = run(
            monkeypatch, capsys, "logs", "compact", "--source", f"s3://{bucket}/e2e-log",
            "--output", parquet, "--nice", "0", "--json",
        )  # fmt: skip
        assert code == 0, err

        # -- the campaign: sampled from the replayed window, created in Label Studio ---------------
        tasks_file = tmp_path / "tasks.parquet"
        window = f"{window_start.isoformat()}..{window_end.isoformat()}"
        code, out, err = run(
            monkeypatch, capsys, "annotate", "sample", "--data", parquet, "--window", window,
            "--size", str(len(replayed)), "--output", str(tasks_file), "--seed", str(SEED),
        )  # fmt: skip
        assert code == 0, err
        tasks = pd.read_parquet(tasks_file)
        assert set(tasks["text"]) == set(replayed["text_description"])  # held-out never drawn
        monkeypatch.setenv("LABEL_STUDIO_URL", label_studio["url"])
        monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio["api_key"])
        monkeypatch.delenv("DATALAB_TOKEN", raising=False)
        project = "NAF end to end"
        code, out, err = run(
            monkeypatch, capsys, "annotate", "create", "--tasks", str(tasks_file),
            "--project", project, "--json",
        )  # fmt: skip
        assert code == 0, err
        created = json.loads(out)
        assert created["created"] and created["total"] == len(tasks)

        # the annotators: the file's expert codes, through Label Studio's API
        expert = dict(zip(replayed["text_description"], replayed["code"], strict=True))
        with LabelStudio(label_studio["url"], label_studio["api_key"]) as ls:
            pages = ls.pages("/api/tasks/", {"project": created["project_id"], "fields": "all"})
            for task in pages:
                annotate(ls, task, expert[task["data"]["text"]], naf2008)

        # -- export to SeaweedFS, retrain, promote ---------------------------------------------
        gold = f"s3://{bucket}/e2e-gold/naf"
        code, out, err = run(
            monkeypatch, capsys, "annotate", "export", "-p", project, "-o", gold, "--json"
        )
        assert code == 0, err
        exported = json.loads(out)
        cfg = config_file(tmp_path / "retrain", nomenclatures_dir)
        code, out, err = run(
            monkeypatch, capsys, "retrain", "--name", NAME, "--gold", gold, "--config", cfg,
            "--holdout", "0.3", "--holdout-seed", str(SEED), "--json",
        )  # fmt: skip
        assert code == 0, err
        retrained = json.loads(out)
        challenger = retrained["version"]
        assert retrained["gold_rows_trained"] + retrained["gold_rows_held_out"] == len(tasks)
        code, out, err = run(
            monkeypatch, capsys, "promote", "--name", NAME, "--gold", gold, "--min-rows", "10",
            "--json",
        )  # fmt: skip
        decision = json.loads(out)
        assert code == 0 and decision["decision"] == "promote", (decision, err)
        assert dict(client.get_registered_model(NAME).aliases)["champion"] == challenger

        # -- the running API follows the alias: the new version, measured on the held-out rows ---
        deadline = time.monotonic() + 120
        while api.get("/model").json()["version"] != challenger:
            assert time.monotonic() < deadline, f"the API still serves {api.get('/model').text}"
            time.sleep(0.5)
        after, version, right_after = accuracy(api, held)
        assert version == challenger
    finally:
        if api is not None:
            api.close()
        server.stop()

    figures = {
        "held_out_rows": len(held),
        "replayed_descriptions": len(replayed),
        "requests_replayed": int(answered),
        "annotated": len(tasks),
        "gold_rows_trained": retrained["gold_rows_trained"],
        "gold_rows_held_out_for_the_comparison": retrained["gold_rows_held_out"],
        "champion": {"version": champion, "held_out_top1_accuracy": before},
        "challenger": {"version": challenger, "held_out_top1_accuracy": after},
        "held_out_discordant": {  # rows only one model got right (paired, as McNemar)
            "champion_only": int((right_before & ~right_after).sum()),
            "challenger_only": int((right_after & ~right_before).sum()),
        },
        "promotion": {
            "decision": decision["decision"],
            "reason": decision["reason"],
            "mcnemar": decision["mcnemar"],
        },
        "export": {k: exported[k] for k in ("file",) if k in exported},
        "seconds": round(time.monotonic() - started, 1),
    }
    ARTIFACT.parent.mkdir(exist_ok=True)
    ARTIFACT.write_text(json.dumps(figures, indent=2, default=str))
    print(
        f"\nheld-out top-1 accuracy ({len(held)} rows of dev1000, through the API): "
        f"champion v{champion} {before:.3f} -> promoted v{challenger} {after:.3f}"
    )
    assert after > before, figures
