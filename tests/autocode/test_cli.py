import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import typer.main
import yaml

from autocode import cli

from .conftest import run

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def config_file(tmp_path, nomenclatures_dir, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    path = tmp_path / "train.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "nomenclatures_folder": str(nomenclatures_dir),
                "only_codes": ["10", "56"],
                "model": "tfidf",
                "evaluation": [{"uri": str(FIXTURES / "labelled_sample.csv")}],
            }
        )
    )
    return path


def test_build_cold_start(monkeypatch, capsys, tmp_path, config_file):
    output = tmp_path / "cold.parquet"
    code, _, err = run(
        monkeypatch, capsys, "data", "build-cold-start", "--config", str(config_file),
        "--output", str(output), "--report", str(tmp_path / "report.csv"),
    )  # fmt: skip
    assert code == 0, err
    table = pd.read_parquet(output)
    assert set(table.columns) == {"text", "code", "source"}
    report = pd.read_csv(tmp_path / "report.csv", dtype=str)
    assert len(report) == len(set(table["code"])) and "rows per code" in err


def test_train_predict_evaluate(monkeypatch, capsys, tmp_path, config_file, nomenclatures_dir):
    model = tmp_path / "model"
    code, _, err = run(
        monkeypatch, capsys, "train", "--config", str(config_file), "--output", str(model)
    )
    assert code == 0, err
    assert (model / "MLmodel").is_file()
    assert "labelled_sample_accuracy" in err
    assert "3 rows left out (invalid)" in err

    output = tmp_path / "coded.csv"
    code, _, err = run(
        monkeypatch, capsys, "predict", "--model", str(model),
        "--input", str(FIXTURES / "labelled_sample.csv"), "--output", str(output), "--k", "3",
    )  # fmt: skip
    assert code == 0, err
    coded = pd.read_csv(output, dtype=str, keep_default_na=False)
    assert len(coded) == 7
    assert {"code_1", "proba_3", "ic", "auto", "subclass_label", "pred_code_1"} - set(
        coded.columns
    ) == {"pred_code_1"}
    assert coded.loc[0, "code"] == "1071C"  # the input columns are kept as they were
    assert coded.loc[0, "code_1"].startswith("10.71")

    code, out, err = run(
        monkeypatch, capsys, "evaluate", "--model", str(model),
        "--input", str(FIXTURES / "labelled_sample.csv"), "--figures", str(tmp_path / "fig"),
        "--json",
    )  # fmt: skip
    assert code == 0, err
    metrics = json.loads(out)["labelled_sample"]
    assert metrics["n"] == 4 and 0 <= metrics["accuracy"] <= 1
    assert (tmp_path / "fig" / "labelled_sample" / "automatic_coding_curve.png").is_file()
    assert "3 invalid" in err

    twice = tmp_path / "twice.csv"
    pd.read_csv(FIXTURES / "labelled_sample.csv", dtype=str).head(2).to_csv(twice, index=False)
    code, out, err = run(
        monkeypatch, capsys, "evaluate", "--model", str(model), "--json", "--combined",
        "--input", str(FIXTURES / "labelled_sample.csv"), "--input", str(twice),
    )  # fmt: skip
    assert code == 0, err
    results = json.loads(out)
    assert results["combined"]["n"] == 6  # 4 valid rows + the 2 of the second file
    assert results["combined_distinct"]["n"] == 4  # those 2 repeat texts of the first file


def test_cross_validation(monkeypatch, capsys, config_file):
    code, out, err = run(
        monkeypatch, capsys, "evaluate", "--cv", "2", "--config", str(config_file), "--json"
    )
    assert code == 0, err
    assert 0.3 < json.loads(out)["cv2"]["accuracy"] <= 1


def test_user_errors_are_one_line(monkeypatch, capsys, tmp_path, config_file):
    code, _, err = run(monkeypatch, capsys, "train", "--config", str(tmp_path / "nope.yaml"))
    assert code == 2 and "config file not found" in err and "Traceback" not in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("modle: fasttext\n")
    code, _, err = run(monkeypatch, capsys, "train", "--config", str(bad))
    assert code == 2 and "unknown config keys ['modle']" in err
    code, _, err = run(
        monkeypatch, capsys, "train", "--config", str(config_file),
        "--nomenclatures", str(tmp_path / "missing"),
    )  # fmt: skip
    assert code == 2 and "nomenclature folder" in err
    code, _, err = run(monkeypatch, capsys, "evaluate")
    assert code == 2 and "--model" in err
    code, _, err = run(
        monkeypatch, capsys, "predict", "--model", str(tmp_path / "nope"),
        "--input", "x.csv", "--output", "y.csv",
    )  # fmt: skip
    assert code == 2 and "no such model directory" in err


def test_default_config_finds_the_nomenclature_folder(monkeypatch, nomenclatures_dir):
    from autocode.train import DEFAULT_OUTPUT, load_nomenclature

    monkeypatch.setenv("AUTOCODE_NOMENCLATURES", str(nomenclatures_dir))
    config = cli._config(None, None)
    assert config.cold_start and config.output == DEFAULT_OUTPUT
    nomenclature, notes = load_nomenclature(config)
    assert len(nomenclature.codes()) == 732 and len(notes) == 1728


DOCS = Path(__file__).parents[2] / "docs"
# where each group's commands are documented; docs/autocode.md (everything else) links to them
PAGES = {"logs": "monitoring.md", "monitor": "monitoring.md"}
PAGES |= dict.fromkeys(("distill", "retrain", "compare", "loop"), "loop.md")


def _commands(command: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every command of the CLI with its path (``serve keys add``), nested ones included, and
    the groups that run without a subcommand (``serve``). Typer builds the classes of its own
    copy of click, so a group is what has ``commands``, not an instance of click.Group."""
    if hasattr(command, "commands"):
        if path and command.invoke_without_command:
            yield path, command
        for name, sub in command.commands.items():
            yield from _commands(sub, f"{path} {name}".strip())
    else:
        yield path, command


def test_every_command_and_option_is_documented():
    commands = dict(_commands(typer.main.get_command(cli.app)))
    options = {
        name: [p for p in command.params if p.param_type_name == "option"]
        for name, command in commands.items()
    }
    # the walk reaches nested commands, groups that run, and their options
    assert {"serve", "serve keys add", "monitor drift", "loop run"} <= set(commands)
    assert "--password-stdin" in [o.opts[0] for o in options["serve users add"]]
    pages = {page: (DOCS / page).read_text() for page in {"autocode.md", *PAGES.values()}}
    missing = []
    for name, command in commands.items():
        page = PAGES.get(name.split()[0], "autocode.md")
        if not command.help:
            missing.append(f"`autocode {name}` has no help")
        if f"autocode {name}" not in pages[page]:
            missing.append(f"docs/{page} does not show `autocode {name}`")
        for option in options[name]:
            if not option.help:
                missing.append(f"`autocode {name}` {option.opts[0]} has no help")
            if option.opts[0] not in pages[page]:
                missing.append(f"docs/{page} lacks `autocode {name}` {option.opts[0]}")
    assert not missing, "undocumented:\n" + "\n".join(missing)


def test_cold_start_combined_with_labelled_data(tmp_path, nomenclatures_dir, monkeypatch):
    from autocode.train import train

    from .conftest import small_config

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    sample = str(FIXTURES / "labelled_sample.csv")
    config = small_config(
        tmp_path, nomenclatures_dir, model="tfidf", params={},
        train=[{"uri": sample, "name": "register"}], categorical=["type_", "nature"],
    )  # fmt: skip
    result = train(config)
    coder = result.coder
    assert coder.categorical == ("type_", "nature")
    assert coder.info["categorical_values"] == {"type_": ["C", "M"], "nature": ["04", "10", "99"]}
    assert result.metrics["training_rows"] > 4
    rows = pd.DataFrame({"text": ["boulangerie"], "type_": ["C"], "nature": ["10"]})
    assert coder.features(rows) == ["boulanger TYPE_C NATURE_10"]
    assert coder.predict(rows)["code_1"].item().startswith("10.")
