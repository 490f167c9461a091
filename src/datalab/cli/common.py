"""Helpers shared by the CLI commands: the API client, output formats, errors."""

from __future__ import annotations

import enum
import json
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from datalab.client import Client, ClientError

console = Console()
err_console = Console(stderr=True)


class Output(enum.StrEnum):
    table = "table"
    json = "json"


OutputOption = Annotated[
    Output, typer.Option("--output", "-o", help="Output format.", case_sensitive=False)
]
ProjectOption = Annotated[
    str | None,
    typer.Option(
        "--project",
        "-p",
        help="Project to act in (default: your personal project).",
        envvar="DATALAB_PROJECT",
    ),
]
UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url", help="Platform URL (default: from `datalab login`).", envvar="DATALAB_URL"
    ),
]


def client(project: str | None = None, url: str | None = None) -> Client:
    return Client.from_environment(url=url, project=project)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], title: str = "") -> None:
    table = Table(title=title or None)
    for column in columns:
        table.add_column(column.replace("_", " ").upper())
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    console.print(table)


def print_commands(commands: dict[str, Any] | None) -> None:
    """Show the equivalent commands, dimmed, so users learn the underlying tools."""
    if not commands:
        return
    for key, value in commands.items():
        if isinstance(value, str) and key != "values_yaml":
            console.print(
                f"[dim]# {key}:[/dim] [dim]{value}[/dim]", highlight=False, soft_wrap=True
            )


def fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[red]Error:[/red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def run_safely(app: typer.Typer) -> None:
    """Run the app; user-facing errors become a message and exit code 1, never a traceback."""
    from datalab.errors import ConfigError, DatalabError

    try:
        app(standalone_mode=True)
    except (ClientError, ConfigError, DatalabError) as exc:
        err_console.print(f"[red]Error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)
