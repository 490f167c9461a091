"""``autocode distill`` on prediction logs compacted by the monitoring ETL: a teacher model codes
the window's distinct descriptions with their logged inputs, descriptions already in the gold
standard are left out, ``--size`` draws reproducibly, the file trains a model whose automatic
decision still rests on experts' codes only, and bad input is named in one line."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from autocode.annotate.campaign import text_key
from autocode.model import load_coder

from ..annotate.conftest import compact_log
from ..conftest import run, small_config
from ..monitor.conftest import record

DAY = datetime(2026, 11, 2, tzinfo=UTC)
WINDOW = "2026-11-02..2026-11-04"


@pytest.fixture(scope="module")
def logged(tmp_path_factory, dev_rows) -> dict:
    """Two days of traffic on dev1000 descriptions of the small model's divisions (10, 56),
    each logged with its register variables, some typed twice otherwise; blank texts; one
    description outside the window; and a gold file holding three of the descriptions."""
    rows = dev_rows[dev_rows["code"].str[:2].isin(["10", "56"])].head(40).reset_index(drop=True)
    records = []
    for i, row in rows.iterrows():
        inputs = {"type_": row["type_"], "nature": row["nature"]}
        ts = DAY + timedelta(minutes=10 * int(i))
        records.append(record(ts, text=row["text_description"], categorical=inputs))
        if int(i) % 4 == 0:  # the same description, typed otherwise, later
            again = f"  {row['text_description'].upper()} "
            records.append(record(ts + timedelta(hours=20), text=again, categorical=inputs))
    records += [record(DAY + timedelta(hours=3, seconds=s), text=" ") for s in range(2)]
    records.append(record(DAY + timedelta(days=5), text="hors de la fenêtre"))
    tmp = tmp_path_factory.mktemp("distill")
    gold = tmp / "gold" / "campaign.parquet"
    gold.parent.mkdir()
    pd.DataFrame(
        {"text": rows["text_description"].head(3), "code": rows["code"].head(3)}
    ).to_parquet(gold)
    return {"root": compact_log(tmp, records), "rows": rows, "gold": gold.parent, "tmp": tmp}


def distill(monkeypatch, capsys, logged, model: Path, output: Path, *extra: str):
    return run(
        monkeypatch, capsys, "distill", "--data", str(logged["root"]), "--window", WINDOW,
        "--teacher", str(model), "--output", str(output), *extra,
    )  # fmt: skip


def test_the_teacher_codes_each_new_description_once(
    logged, small_model, nomenclatures_dir, monkeypatch, capsys, tmp_path
):
    model = small_model.output
    output = tmp_path / "distilled.parquet"
    code, out, err = distill(
        monkeypatch, capsys, logged, model, output, "--gold", str(logged["gold"]), "--json"
    )
    assert code == 0, err
    summary = json.loads(out)
    rows = pd.read_parquet(output)
    texts = logged["rows"]["text_description"]
    assert summary["descriptions"] == len(texts) and summary["already_in_gold"] == 3
    assert summary["predictions"] == len(texts) + len(texts[::4]) + 2  # the blank ones too
    assert summary["rows"] == len(rows) == len(texts) - 3
    keys = rows["text"].map(text_key)
    assert keys.is_unique and not set(keys) & {text_key(t) for t in texts.head(3)}
    assert set(keys) == {text_key(t) for t in texts.iloc[3:]}
    # the frequency counts each way it was typed
    expected = {text_key(t): 2 if i % 4 == 0 else 1 for i, t in enumerate(texts)}
    assert rows["frequency"].tolist() == [expected[k] for k in keys]
    # coded by the teacher with the inputs it was logged with
    assert {"type_", "nature", "code", "ic", "first_seen", "last_seen"} <= set(rows.columns)
    teacher = load_coder(str(model)).predict(rows[["text", "type_", "nature"]], k=1)
    assert rows["code"].tolist() == teacher["code_1"].tolist()
    assert rows["ic"].to_numpy() == pytest.approx(teacher["ic"].to_numpy())
    assert "teacher coding" in err  # the progress bar

    # --size draws reproducibly, without replacement
    first, second = tmp_path / "a.parquet", tmp_path / "b.parquet"
    for path in (first, second):
        code, _, err = distill(monkeypatch, capsys, logged, model, path, "-n", "7", "--seed", "3")
        assert code == 0, err
    drawn = pd.read_parquet(first)
    assert len(drawn) == 7 and drawn["text"].is_unique
    assert drawn.equals(pd.read_parquet(second))

    # the file trains a model (labels: model) that still codes nothing automatically
    from autocode.train import NO_AUTOMATIC_CODING, train

    config = small_config(
        tmp_path / "student",
        nomenclatures_dir,
        train=[{"uri": str(output), "text_column": "text", "name": "distilled", "labels": "model"}],
    )
    student = train(config).coder
    assert student.threshold == NO_AUTOMATIC_CODING
    assert student.info["threshold_basis"]["rule"] == "cold start"
    assert student.info["training_rows"] == small_model.coder.info["training_rows"] + len(rows)


def test_bad_input_is_named(logged, small_model, monkeypatch, capsys, tmp_path):
    model, output = small_model.output, tmp_path / "out.parquet"
    cases = [
        (["--window", "2026-12-01..2026-12-02"], "empty window: no prediction logged"),
        (["-n", "0"], "--size 0: ask for at least one description"),
        (["--gold", str(tmp_path / "nowhere")], "gold file or folder not found"),
    ]
    for extra, message in cases:
        code, _, err = distill(monkeypatch, capsys, logged, model, output, *extra)
        assert code == 2 and message in err, err
    everything = tmp_path / "all-gold.parquet"
    pd.DataFrame({"text": logged["rows"]["text_description"], "code": "10.71C"}).to_parquet(
        everything
    )
    code, _, err = distill(monkeypatch, capsys, logged, model, output, "--gold", str(everything))
    assert code == 2 and "are already in the gold standard" in err, err
    code, _, err = distill(monkeypatch, capsys, logged, tmp_path / "no-model", output)
    assert code == 2 and "no such model directory" in err
    assert not output.exists()
