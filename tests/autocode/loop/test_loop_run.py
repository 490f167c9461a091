"""`autocode loop run`: the steps, their order and their errors (Label Studio down, missing
options, unknown steps) without servers; the Label Studio steps' own behaviour is tested with
a real Label Studio in tests/autocode/annotate/test_labelstudio.py, retraining and promotion
with a real MLflow in test_retrain_promote.py."""

from __future__ import annotations

import pytest

from autocode.loop.run import STEPS, LoopError, LoopSettings, campaign_folder, run_loop

from ..conftest import free_port, run


def test_steps_are_checked_and_run_in_order(monkeypatch):
    from autocode.loop import run as module

    calls = []
    for name in STEPS:
        monkeypatch.setitem(module._STEP, name, lambda s, step, name=name: calls.append(name))
    run_loop(LoopSettings("m", "p", "g", steps=["promote", "export", "wait"]))
    assert calls == ["wait", "export", "promote"]  # the loop's order, whatever was written
    with pytest.raises(LoopError, match="choose among campaign, wait, export"):
        run_loop(LoopSettings("m", "p", "g", steps=["sample"]))
    with pytest.raises(LoopError, match="choose among"):
        run_loop(LoopSettings("m", "p", "g", steps=[]))


def test_campaign_folder():
    assert campaign_folder("s3://gold/naf/", "NAF week 49") == "s3://gold/naf/NAF-week-49"
    assert campaign_folder("/data/gold", "a/b") == "/data/gold/a-b"


def test_label_studio_down(monkeypatch, capsys, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    for step in ("wait", "export"):
        code, _, err = run(
            monkeypatch, capsys, "loop", "run", "--name", "m", "--project", "week-49",
            "--gold", str(tmp_path), "--steps", step, "--url", dead, "--api-key", "k",
        )  # fmt: skip
        assert code == 2, err
        assert "Label Studio" in err and "the champion is unchanged" in err
        assert "Traceback" not in err


def test_missing_options(monkeypatch, capsys, tmp_path):
    code, _, err = run(
        monkeypatch, capsys, "loop", "run", "--name", "m", "--project", "p",
        "--gold", str(tmp_path), "--steps", "campaign",
    )  # fmt: skip
    assert code == 2 and "needs the prediction logs (--data)" in err
    code, _, err = run(
        monkeypatch, capsys, "loop", "run", "--name", "m", "--project", "p",
        "--gold", str(tmp_path), "--steps", "retrain,sample",
    )  # fmt: skip
    assert code == 2 and "['sample']" in err
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    code, _, err = run(
        monkeypatch, capsys, "loop", "run", "--name", "m", "--project", "p",
        "--gold", str(tmp_path), "--steps", "retrain",
    )  # fmt: skip
    assert code == 2 and "no MLflow tracking URI" in err
