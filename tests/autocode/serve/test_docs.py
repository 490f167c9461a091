"""docs/autocode-api.md documents every setting, endpoint and command (and nothing else)."""

from __future__ import annotations

import re
from pathlib import Path

import typer

from autocode.serve.cli import app as cli_app
from autocode.serve.settings import ENV_PREFIX, Settings

DOC = (Path(__file__).resolve().parents[3] / "docs" / "autocode-api.md").read_text()


def test_every_setting_is_documented() -> None:
    documented = set(re.findall(r"^\| `(AUTOCODE_API_[A-Z0-9_]+)` \|", DOC, re.M))
    fields = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    assert fields - documented == set(), "undocumented settings"
    assert documented - fields == set(), "documented settings that do not exist"


def test_every_endpoint_is_documented(tmp_path) -> None:
    from autocode.serve.app import create_app

    app = create_app(Settings(model=str(tmp_path), allow_anonymous=True, log_dir=tmp_path))
    schema = app.openapi()
    endpoints = {f"{m.upper()} {p}" for p, ops in schema["paths"].items() for m in ops}
    documented = set(re.findall(r"^\| `((?:GET|POST|PUT|DELETE|PATCH) /[^`]*)` \|", DOC, re.M))
    assert endpoints - documented == set(), "undocumented endpoints"
    assert documented - endpoints == set(), "documented endpoints that do not exist"


def _commands(command, prefix: str) -> list[str]:
    paths = [prefix] if getattr(command, "invoke_without_command", False) else []
    for name, sub in getattr(command, "commands", {}).items():
        if hasattr(sub, "commands"):
            paths += _commands(sub, f"{prefix} {name}")
        else:
            paths.append(f"{prefix} {name}")
    return paths


def test_every_command_is_documented() -> None:
    documented = {
        re.sub(r" [A-Z_]+$", "", c).strip()
        for c in re.findall(r"^\| `(python -m autocode\.serve[a-z ]*[A-Z_ ]*)` \|", DOC, re.M)
    }
    commands = set(_commands(typer.main.get_command(cli_app), "python -m autocode.serve"))
    assert commands == documented


def test_every_metric_is_documented() -> None:
    from autocode.serve.metrics import Metrics

    names = set()
    for metric in Metrics().registry.collect():
        names.add(metric.name.removeprefix("autocode_api_"))
    documented = set()
    for cell in re.findall(r"^\| (`[a-z_]+`(?:, `[a-z_]+`)*) \|", DOC, re.M):
        documented |= set(re.findall(r"`([a-z_]+)`", cell))
    # prometheus_client reports counters without their _total suffix
    documented = {d.removesuffix("_total") for d in documented}
    assert names <= documented
