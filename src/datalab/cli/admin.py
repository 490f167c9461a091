"""``datalab admin``: what administrators see across users and projects."""

from __future__ import annotations

from typing import Annotated

import typer

from datalab.cli.common import Output, OutputOption, client, console, print_json, print_table

admin_app = typer.Typer(
    help="Administration across users and projects (administrators).", no_args_is_help=True
)


@admin_app.command("services")
def admin_services(
    owner: Annotated[str | None, typer.Option(help="Only this user's services.")] = None,
    output: OutputOption = Output.table,
) -> None:
    """List every service of every project. Stop one with `datalab suspend ID` or
    `datalab delete ID` (administrators may, from any project)."""
    params = {"owner": owner} if owner else {}
    services = client().get("/api/admin/services", params=params)["services"]
    if output is Output.json:
        print_json(services)
        return
    print_table(services, ["id", "owner", "project", "chart", "phase", "reason", "created_at"])


@admin_app.command("orphans")
def admin_orphans(output: OutputOption = Output.table) -> None:
    """List what the backend runs that the platform has no record of (never deleted by it)."""
    answer = client().get("/api/admin/orphans")
    if output is Output.json:
        print_json(answer)
        return
    if not answer["orphans"]:
        console.print(f"no orphans: the {answer['backend']} backend runs only recorded services")
        return
    for name in answer["orphans"]:
        console.print(name)


def register(app: typer.Typer) -> None:
    app.add_typer(admin_app, name="admin")
