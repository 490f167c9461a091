"""The docs describe every CLI command and API endpoint (settings: see test_config.py)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer

from datalab.cli import app

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _command_paths(command: Any, prefix: str = "datalab") -> list[str]:
    if hasattr(command, "commands"):  # a group (typer may vendor its own click)
        paths = [prefix] if command.invoke_without_command and prefix != "datalab" else []
        for name, sub in command.commands.items():
            paths += _command_paths(sub, f"{prefix} {name}")
        return paths
    return [prefix]


def test_every_cli_command_is_documented() -> None:
    documented = set(
        re.findall(r"^\| `(datalab[a-z0-9 -]*)` \|", (DOCS / "cli.md").read_text(), re.M)
    )
    commands = set(_command_paths(typer.main.get_command(app)))
    assert commands - documented == set(), "undocumented commands"
    assert documented - commands == set(), "documented commands that do not exist"


def test_every_endpoint_is_documented(tmp_path: Path) -> None:
    from datalab.app import create_app
    from datalab.config import load_settings
    from datalab.platform import Platform

    platform = Platform.create(load_settings(None, data_dir=tmp_path, backend={"name": "memory"}))
    schema = create_app(platform).openapi()
    platform.db.dispose()
    endpoints = {
        f"{method.upper()} {path}" for path, ops in schema["paths"].items() for method in ops
    }
    documented = set(
        re.findall(r"^\| `([A-Z]+ /api/[^`]*)` \|", (DOCS / "api.md").read_text(), re.M)
    )
    assert endpoints - documented == set(), "undocumented endpoints"
    assert documented - endpoints == set(), "documented endpoints that do not exist"
