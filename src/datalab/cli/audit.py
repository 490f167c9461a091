"""``datalab audit``: query and export the audit log (administrators)."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from datalab.cli.common import Output, OutputOption, client, print_json, print_table

audit_app = typer.Typer(help="The audit log of state-changing actions (admin).")

UserOption = Annotated[str | None, typer.Option("--user", help="Only this user's actions.")]
ProjectFilter = Annotated[str | None, typer.Option("--project", help="Only in this project.")]
ActionOption = Annotated[
    str | None, typer.Option("--action", help="Action prefix, e.g. services or secrets.write.")
]
OutcomeOption = Annotated[str | None, typer.Option("--outcome", help="success, denied or failed.")]
SinceOption = Annotated[str | None, typer.Option("--since", help="ISO time, e.g. 2026-01-31.")]
UntilOption = Annotated[str | None, typer.Option("--until", help="ISO time (exclusive).")]


def _params(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


@audit_app.command("list")
def list_entries(
    user: UserOption = None,
    project: ProjectFilter = None,
    action: ActionOption = None,
    outcome: OutcomeOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="Entries to show.")] = 50,
    output: OutputOption = Output.table,
) -> None:
    """Show the latest entries, newest first."""
    answer = client().get(
        "/api/audit",
        params=_params(
            user=user,
            project=project,
            action=action,
            outcome=outcome,
            since=since,
            until=until,
            limit=limit,
        ),
    )
    if output is Output.json:
        print_json(answer)
        return
    columns = ["at", "user", "project", "action", "target", "outcome", "status", "client_ip"]
    print_table(answer["entries"], columns, title="Audit log")


@audit_app.command("export")
def export(
    user: UserOption = None,
    project: ProjectFilter = None,
    action: ActionOption = None,
    outcome: OutcomeOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
) -> None:
    """Print every matching entry as JSON lines, oldest first (redirect to a file)."""
    text = client().get(
        "/api/audit/export",
        params=_params(
            user=user, project=project, action=action, outcome=outcome, since=since, until=until
        ),
    )
    sys.stdout.write(text)


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")
