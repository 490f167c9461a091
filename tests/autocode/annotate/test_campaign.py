"""``autocode annotate sample`` on prediction logs compacted by the monitoring ETL: one task per
distinct description (its frequency, its latest prediction's inputs and top 5), descriptions
already annotated kept aside as the certainty stratum, reproducible draws, and bad input named
in one line."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from autocode.annotate.campaign import sample_campaign, text_key
from autocode.annotate.design import DesignError
from autocode.monitor.query import Dataset, Window

from ..conftest import run
from ..monitor.conftest import record
from .conftest import compact_log

DAY = datetime(2026, 11, 2, tzinfo=UTC)
WINDOW = "2026-11-02..2026-11-04"


@pytest.fixture(scope="module")
def logged(tmp_path_factory) -> tuple[Path, list[dict]]:
    """Two days of traffic: 80 descriptions, some typed in several ways, repeated; blank texts;
    a categorical input; and one day outside the window."""
    rng = np.random.default_rng(5)
    records = []
    for i in range(600):
        n = int(rng.zipf(1.6)) % 80  # a few descriptions are very frequent
        text = f"Vente de pain numéro {n}"
        if i % 5 == 0:
            text = f"  VENTE de pain   numéro {n} "  # the same description, typed otherwise
        ts = DAY + timedelta(minutes=4 * i + float(rng.uniform(0, 1)))
        ic = float(np.clip(0.15 * (n % 7) + rng.normal(0, 0.02), 0, 1))
        records.append(record(ts, ic=ic, text=text, categorical={"nature": str(10 + n % 3)}))
    records += [record(DAY + timedelta(hours=3, seconds=s), text="  ") for s in range(3)]
    records += [record(DAY + timedelta(days=5), text="hors de la fenêtre")]
    return compact_log(tmp_path_factory.mktemp("campaign"), records), records


def in_window(records: list[dict]) -> list[dict]:
    return [r for r in records if r["ts"] < "2026-11-04"]


def test_one_task_per_description_with_its_latest_prediction(logged) -> None:
    root, records = logged
    campaign = sample_campaign(Dataset(str(root)), Window.parse(WINDOW), 30, seed=1)
    tasks = campaign.tasks
    assert campaign.rows == len(in_window(records)) and campaign.blank == 3
    assert len(tasks) == 30 and tasks["annotate"].all() and tasks["task_id"].is_unique
    keys = tasks["text"].map(text_key)
    assert keys.is_unique  # de-duplicated, whatever the case and blanks
    texts = [r for r in in_window(records) if r["input"]["text"].strip()]
    for _, task in tasks.iterrows():
        same = [r for r in texts if text_key(r["input"]["text"]) == text_key(task["text"])]
        latest = max(same, key=lambda r: r["ts"])
        assert task["frequency"] == len(same)
        assert task["text"] == latest["input"]["text"] and task["prediction_id"] == latest["id"]
        assert [task["code_1"], task["code_2"]] == latest["codes"]
        assert task["proba_1"] == pytest.approx(latest["probabilities"][0], abs=1e-6)
        assert (
            task["ic"] == pytest.approx(latest["ic"])
            and task["nature"] == latest["input"]["nature"]
        )
        assert pd.isna(task["code_3"])  # the log kept 2 codes
    # the weights add up to the window's traffic with a text: every stratum's exactly
    assert tasks["weight"].sum() == pytest.approx(len(texts))
    expected = (tasks["frequency"] / tasks["inclusion_probability"]).to_numpy()
    assert tasks["weight"].to_numpy() == pytest.approx(expected)
    assert set(campaign.strata["stratum"]) >= set(tasks["stratum"])


def test_low_ic_strata_are_over_sampled(logged) -> None:
    root, _ = logged
    dataset, window = Dataset(str(root)), Window.parse(WINDOW)
    plain = sample_campaign(dataset, window, 30, seed=1, uncertainty_share=0.0).tasks
    uncertain = sample_campaign(dataset, window, 30, seed=1, uncertainty_share=1.0).tasks
    share = lambda tasks: (tasks["ic"] < 0.2).mean()  # noqa: E731
    assert share(uncertain) > share(plain)
    # probability ∝ frequency: every drawn unit of a stratum stands for as many rows (F_h / n_h),
    # but those taken with certainty (their frequency alone)
    for tasks in (plain, uncertain):
        drawn = tasks[tasks["inclusion_probability"] < 1]
        assert (drawn.groupby("stratum")["weight"].agg(np.ptp) < 1e-9).all()


def test_annotated_descriptions_are_not_drawn_again(logged) -> None:
    root, records = logged
    dataset, window = Dataset(str(root)), Window.parse(WINDOW)
    first = sample_campaign(dataset, window, 20, seed=3).tasks
    gold = first["text"].head(12).str.upper()  # annotated, as the experts typed them
    done = {text_key(t) for t in gold}
    second = sample_campaign(dataset, window, 20, seed=3, annotated=done).tasks
    fresh, certain = second[second["annotate"]], second[~second["annotate"]]
    assert len(fresh) == 20 and not fresh["text"].map(text_key).isin(done).any()
    assert sorted(certain["text"].map(text_key)) == sorted(done)
    assert (certain["stratum"] == "annotated").all()
    assert (certain["inclusion_probability"] == 1).all()
    assert (certain["weight"] == certain["frequency"]).all()
    texts = [r for r in in_window(records) if r["input"]["text"].strip()]
    assert second["weight"].sum() == pytest.approx(len(texts))  # still the whole traffic


def test_only_the_model_versions_asked(tmp_path) -> None:
    """``--model-version``: the population is the traffic those versions coded."""
    old = [record(DAY + timedelta(minutes=i), text=f"ancien {i}", version="3") for i in range(9)]
    new = [record(DAY + timedelta(minutes=i), text=f"nouveau {i}", version="4") for i in range(6)]
    root = compact_log(tmp_path, old + new)
    window = Window.parse("2026-11-02..2026-11-03")
    tasks = sample_campaign(Dataset(str(root)), window, 6, model_versions=["4"]).tasks
    assert sorted(tasks["text"]) == sorted(r["input"]["text"] for r in new)
    assert (tasks["inclusion_probability"] == 1).all() and tasks["weight"].sum() == 6
    with pytest.raises(DesignError, match="has only 6 distinct descriptions"):
        sample_campaign(Dataset(str(root)), window, 7, model_versions=["4"])


def test_same_seed_same_campaign(logged) -> None:
    root, _ = logged
    dataset, window = Dataset(str(root)), Window.parse(WINDOW)
    first = sample_campaign(dataset, window, 25, seed=11).tasks
    pd.testing.assert_frame_equal(first, sample_campaign(dataset, window, 25, seed=11).tasks)
    assert set(sample_campaign(dataset, window, 25, seed=12).tasks["task_id"]) != set(
        first["task_id"]
    )


def test_bad_campaigns_are_named(logged) -> None:
    root, _ = logged
    dataset = Dataset(str(root))
    with pytest.raises(DesignError, match="empty window: no prediction logged in 2026-11-10"):
        sample_campaign(dataset, Window.parse("2026-11-10..2026-11-11"), 5)
    units = 80  # at most: the descriptions of the window
    with pytest.raises(DesignError, match=r"has only \d+ distinct descriptions not yet annotated"):
        sample_campaign(dataset, Window.parse(WINDOW), units + 1)


def test_cli_writes_the_task_file(logged, tmp_path, monkeypatch, capsys) -> None:
    root, _ = logged
    gold = tmp_path / "gold.parquet"
    pd.DataFrame({"text_description": ["vente de pain numéro 1"], "code": ["10.71C"]}).to_parquet(
        gold
    )
    output = tmp_path / "tasks.parquet"
    code, out, err = run(
        monkeypatch, capsys, "annotate", "sample", "--data", str(root), "--window", WINDOW,
        "--size", "12", "--gold", str(gold), "--output", str(output), "--seed", "4", "--json",
    )  # fmt: skip
    assert code == 0, err
    tasks = pd.read_parquet(output)
    assert int(tasks["annotate"].sum()) == 12 and (~tasks["annotate"]).sum() == 1
    assert {"text", "nature", "code_5", "proba_5", "inclusion_probability", "weight"} <= set(
        tasks.columns
    )
    assert '"tasks": 12' in out and "12 tasks written to" in err
    again = tmp_path / "again.csv"
    code, _, err = run(
        monkeypatch, capsys, "annotate", "sample", "-d", str(root), "-w", WINDOW, "-n", "12",
        "--gold", str(gold), "-o", str(again), "--seed", "4",
    )  # fmt: skip
    assert code == 0, err
    assert pd.read_csv(again)["task_id"].tolist() == tasks["task_id"].tolist()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--window", "2026-12-01..2026-12-02", "--size", "3"], "error: empty window"),
        (["--window", WINDOW, "--size", "500"], "ask for at most"),
        (["--window", WINDOW, "--size", "0"], "ask for at least 1"),
        (["--window", WINDOW, "--size", "5", "--bands", "0.5,x"], "--bands '0.5,x'"),
        (["--window", WINDOW, "--size", "5", "--gold", "GOLD"], "no text column"),
        (["--window", "yesterday", "--size", "5"], "write START..END"),
    ],
)
def test_cli_bad_input_is_one_line(logged, tmp_path, monkeypatch, capsys, args, message) -> None:
    root, _ = logged
    gold = tmp_path / "gold.csv"
    pd.DataFrame({"libelle": ["vente"], "code": ["10.71C"]}).to_csv(gold, index=False)
    args = [str(gold) if a == "GOLD" else a for a in args]
    code, _, err = run(
        monkeypatch, capsys, "annotate", "sample", "--data", str(root),
        "--output", str(tmp_path / "t.parquet"), *args,
    )  # fmt: skip
    assert code == 2 and message in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1
