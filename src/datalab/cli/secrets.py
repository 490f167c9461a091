"""``datalab secrets``: your and your projects' secrets (``ls``, ``get``, ``set``, ``rm``,
``mv``, ``export``), through the platform's secrets API.

Paths start with your personal project (``user-alice/...``) or the project you act in
(``--project``). ``set`` reads a value from a hidden prompt when given ``KEY`` without ``=``,
so that it stays out of the shell history and process list.
"""

from __future__ import annotations

import sys
from typing import Annotated
from urllib.parse import quote

import typer

from datalab.cli.common import (
    Output,
    OutputOption,
    ProjectOption,
    client,
    console,
    fail,
    print_json,
)

secrets_app = typer.Typer(
    help="Secrets: list, read, write, rename, delete, export; a Vault token for tools."
)


def _quoted(path: str) -> str:
    return quote(path.strip("/"))


@secrets_app.command("ls")
def ls(
    path: Annotated[str, typer.Argument(help="Directory (default: your top directories).")] = "",
    project: ProjectOption = None,
    output: OutputOption = Output.table,
) -> None:
    """List secrets and directories (ending in /)."""
    url = f"/api/secrets/tree/{_quoted(path)}" if path.strip("/") else "/api/secrets/tree"
    answer = client(project).get(url)
    if output is Output.json:
        print_json(answer)
        return
    prefix = f"{answer['path']}/" if answer["path"] else ""
    for entry in answer["entries"]:
        console.print(prefix + entry, highlight=False)


@secrets_app.command("get")
def get(
    path: Annotated[str, typer.Argument(help="Secret path, e.g. user-alice/db.")],
    project: ProjectOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Show a secret's KEY=value pairs."""
    answer = client(project).get(f"/api/secrets/values/{_quoted(path)}")
    if output is Output.json:
        print_json(answer)
        return
    for key, value in sorted(answer["data"].items()):
        sys.stdout.write(f"{key}={value}\n")


@secrets_app.command("export")
def export(
    path: Annotated[str, typer.Argument(help="Secret path.")],
    project: ProjectOption = None,
) -> None:
    """Print `export KEY=value` lines: eval "$(datalab secrets export user-alice/db)"."""
    sys.stdout.write(client(project).get(f"/api/secrets/export/{_quoted(path)}"))


@secrets_app.command("token")
def token(
    project: ProjectOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Print a Vault token for your secrets as export lines, for the bao / vault CLIs and hvac:
    eval "$(datalab secrets token)"."""
    answer = client(project).post("/api/secrets/token")
    if output is Output.json:
        print_json(answer)
        return
    sys.stdout.write(answer["exports"])


@secrets_app.command("set")
def set_(
    path: Annotated[str, typer.Argument(help="Secret path.")],
    pairs: Annotated[
        list[str], typer.Argument(help="KEY=value pairs; KEY alone prompts for a hidden value.")
    ],
    merge: Annotated[
        bool, typer.Option("--merge", help="Keep the secret's other keys (default: replace).")
    ] = False,
    project: ProjectOption = None,
) -> None:
    """Create or replace a secret."""
    data: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not key:
            raise fail(f"{pair!r} is not KEY=value", 2)
        data[key] = value if sep else typer.prompt(f"{key}", hide_input=True)
    api = client(project)
    if merge:
        from datalab.client import ClientError

        try:
            current = api.get(f"/api/secrets/values/{_quoted(path)}")["data"]
        except ClientError as exc:
            if exc.status != 404:
                raise
            current = {}
        data = {**current, **data}
    answer = api.request("PUT", f"/api/secrets/values/{_quoted(path)}", json={"data": data})
    console.print(
        f"{answer['path']}: version {answer['version']} ({', '.join(answer['keys'])})",
        highlight=False,
    )


@secrets_app.command("rm")
def rm(
    path: Annotated[str, typer.Argument(help="Secret path.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    project: ProjectOption = None,
) -> None:
    """Delete a secret and all its versions (after confirmation)."""
    if not yes:
        typer.confirm(f"Delete the secret {path} and all its versions?", abort=True)
    client(project).request("DELETE", f"/api/secrets/values/{_quoted(path)}")
    console.print(f"deleted {path}", highlight=False)


@secrets_app.command("mv")
def mv(
    source: Annotated[str, typer.Argument(help="Current path.")],
    target: Annotated[str, typer.Argument(help="New path.")],
    project: ProjectOption = None,
) -> None:
    """Rename a secret."""
    client(project).post("/api/secrets/rename", json={"source": source, "target": target})
    console.print(f"renamed {source} to {target}", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(secrets_app, name="secrets")
