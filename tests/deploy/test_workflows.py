"""The GitHub workflows (.github/workflows; actionlint checks them in `make lint`): the test
workflow runs the README's test command, and the retraining workflow calls autocode's CLI with
commands and options that exist."""

from __future__ import annotations

import re
import shlex
from typing import Any

import pytest
import typer
import yaml

from autocode.cli import app

from .chart import REPO

WORKFLOWS = REPO / ".github" / "workflows"


def _workflow(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    return loaded


def _runs(workflow: dict[str, Any]) -> list[str]:
    return [
        step["run"] for job in workflow["jobs"].values() for step in job["steps"] if "run" in step
    ]


def test_the_test_workflow_runs_the_readmes_test_command() -> None:
    assert "make test   #" in (REPO / "README.md").read_text()
    runs = _runs(_workflow("test.yml"))
    assert "make test" in runs


def _autocode_calls() -> list[list[str]]:
    calls = []
    for run in _runs(_workflow("autocode-retrain.yml")):
        for line in run.splitlines():
            found = re.search(r"(?:^|\$\()\s*(autocode .*?)(?: 2>&1\))?$", line.strip())
            if found:
                calls.append(shlex.split(found.group(1)))
    return calls


def test_the_retraining_workflow_tunes_trains_and_promotes() -> None:
    commands = [call[1] for call in _autocode_calls()]
    assert commands == ["tune", "train", "promote"]


@pytest.mark.parametrize("call", _autocode_calls(), ids=lambda call: call[1])
def test_the_retraining_workflow_uses_real_options(call: list[str]) -> None:
    group: Any = typer.main.get_command(app)
    command = group.commands[call[1]]
    known = {option for param in command.params for option in param.opts}
    used = {word for word in call[2:] if word.startswith("--")}
    assert used <= known, f"autocode {call[1]} has no {sorted(used - known)}"
    required = {param.opts[0] for param in command.params if param.required}
    assert required <= used, f"autocode {call[1]} needs {sorted(required - used)}"
