"""``datalab catalog``, ``launch``, ``services``, ``logs``, ``events``, ``suspend``, ``resume``,
``rename``, ``share``, ``delete`` and ``quota``."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from datalab.cli.common import (
    Output,
    OutputOption,
    ProjectOption,
    client,
    console,
    fail,
    print_commands,
    print_json,
    print_table,
)
from datalab.client import Client

catalog_app = typer.Typer(help="Browse the catalogs of services.", no_args_is_help=True)


@catalog_app.command("list")
def catalog_list(output: OutputOption = Output.table) -> None:
    """List catalogs and their charts."""
    catalogs = client().get("/api/catalogs")
    if output is Output.json:
        print_json(catalogs)
        return
    rows = []
    for catalog in catalogs:
        for chart in catalog.get("charts", []):
            rows.append({"catalog": catalog["id"], **chart})
    print_table(rows, ["catalog", "name", "version", "description"], title="Charts")


@catalog_app.command("show")
def catalog_show(
    chart: str,
    catalog: Annotated[str, typer.Option("--catalog", help="Catalog id.")] = "datalab",
    version: Annotated[str | None, typer.Option(help="Chart version.")] = None,
    project: ProjectOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Show a chart and its default values for you."""
    api = client(project)
    params = {"version": version} if version else {}
    info = api.get(f"/api/catalogs/{catalog}/charts/{chart}", params=params)
    defaults = api.get(f"/api/catalogs/{catalog}/charts/{chart}/values", params=params)
    if output is Output.json:
        print_json({"chart": info, "defaults": defaults})
        return
    import yaml

    console.print(f"[bold]{info['name']}[/bold] {info['version']} — {info.get('description', '')}")
    console.print(f"versions: {', '.join(info.get('versions', []))}")
    console.print("default values for you:")
    typer.echo(yaml.safe_dump(defaults["values"], sort_keys=False).rstrip())


def launch(
    chart: Annotated[str, typer.Argument(help="Chart, e.g. jupyter-python or datalab/mlflow.")],
    catalog: Annotated[str, typer.Option("--catalog", help="Catalog id.")] = "datalab",
    version: Annotated[str | None, typer.Option(help="Chart version (default: latest).")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a value: a.b=c (repeatable).")
    ] = None,
    values: Annotated[
        list[Path] | None,
        typer.Option(
            "--values",
            "-f",
            help="values.yaml file of overrides (repeatable).",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ] = None,
    name: Annotated[str | None, typer.Option(help="Service id (RFC 1123 label).")] = None,
    friendly_name: Annotated[str | None, typer.Option(help="Display name.")] = None,
    shared: Annotated[bool, typer.Option("--shared", help="Share with the project.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Resolve only; print values.")] = False,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Show progress until the service is ready.")
    ] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait with --wait.")] = 900,
    project: ProjectOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Launch a service from a chart (or, with --dry-run, show the values it would get).

    CHART is a chart name, or CATALOG/CHART."""
    if "/" in chart:
        catalog, _, chart = chart.partition("/")
    body = {
        "catalog": catalog,
        "chart": chart,
        "version": version,
        "name": name,
        "friendly_name": friendly_name,
        "set": set_ or [],
        # the server merges the files in order, as helm -f a -f b does
        "values_yaml": [path.read_text() for path in values or []] or None,
        "shared": shared,
        "dry_run": dry_run,
    }
    api = client(project)
    result = api.post("/api/services", json=body)
    if output is Output.json:
        print_json(result)
        return
    if dry_run:
        console.print("[bold]Resolved values[/bold] (dry run, nothing started):")
        typer.echo(result["commands"].get("values_yaml", "").rstrip())
        print_commands(result.get("commands"))
        return
    console.print(f"Launched [bold]{result['id']}[/bold]")
    print_commands(result.get("commands"))
    service = wait_until_settled(api, result, timeout) if wait else result
    console.print(f"{service['id']}: {service['phase']}")
    if service.get("reason") and service["phase"] != "running":
        console.print(f"  {service['reason']}", highlight=False)
    for url in service.get("urls", []):
        console.print(f"  open: {url}")
    if service.get("password"):
        console.print(f"  password: {service['password']}", highlight=False)
    if service.get("notes"):
        console.print(service["notes"].strip(), highlight=False)
    if service["phase"] == "failed":
        raise typer.Exit(1)


_PERCENT = re.compile(r"\((\d+(?:\.\d+)?)%\)")


def wait_until_settled(api: Client, service: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Poll the service, with a progress bar while its environment builds, until it is running,
    failed or suspended (or the timeout passes)."""
    deadline = time.monotonic() + timeout
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(service["phase"], total=100)
        while service["phase"] in ("building", "starting") and time.monotonic() < deadline:
            reason = service.get("reason") or service["phase"]
            match = _PERCENT.search(reason)
            percent = float(match.group(1)) if match else None
            if service["phase"] == "starting":
                percent, reason = 100.0, "starting: waiting for readiness"
            progress.update(task, description=reason[:80], completed=percent)
            time.sleep(0.5)
            service = api.get(f"/api/services/{service['id']}")
    return service


services_app = typer.Typer(help="Your services in the project.", invoke_without_command=True)


@services_app.callback()
def services_list(
    ctx: typer.Context, project: ProjectOption = None, output: OutputOption = Output.table
) -> None:
    """List services (default), or `services show ID`."""
    if ctx.invoked_subcommand is not None:
        return
    result = client(project).get("/api/services")
    if output is Output.json:
        print_json(result)
        return
    print_table(
        result["services"],
        ["id", "name", "chart", "phase", "owner", "shared", "created_at"],
        title=f"Services in {result['project']}",
    )


@services_app.command("show")
def services_show(
    service_id: str, project: ProjectOption = None, output: OutputOption = Output.table
) -> None:
    """Show a service: status, URLs, values."""
    service = client(project).get(f"/api/services/{service_id}")
    if output is Output.json:
        print_json(service)
        return
    console.print(f"[bold]{service['id']}[/bold] ({service['name']}) — {service['phase']}")
    if service.get("reason"):
        console.print(f"  reason: {service['reason']}", highlight=False)
    for url in service.get("urls", []):
        console.print(f"  url: {url}")
    console.print(f"  chart: {service['chart']} {service['version']}, owner {service['owner']}")


def logs(
    service_id: str,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines.")
    ] = False,
    tail: Annotated[int, typer.Option(help="Lines from the end to start with.")] = 200,
    project: ProjectOption = None,
) -> None:
    """Print a service's logs."""
    try:
        for line in client(project).stream_lines(
            f"/api/services/{service_id}/logs", {"tail": tail, "follow": follow}
        ):
            typer.echo(line)
    except KeyboardInterrupt:
        pass


def events(
    service_id: str, project: ProjectOption = None, output: OutputOption = Output.table
) -> None:
    """Show a service's state transitions with their times, oldest first."""
    result = client(project).get(f"/api/services/{service_id}/events")
    if output is Output.json:
        print_json(result)
        return
    print_table(result["events"], ["time", "type", "reason", "message"], title=service_id)
    print_commands(result.get("commands"))


def _action(verb: str, service_id: str, project: str | None) -> None:
    result = client(project).post(f"/api/services/{service_id}/{verb}")
    console.print(f"{service_id}: {result['phase']}")
    print_commands(result.get("commands", {}))


def suspend(service_id: str, project: ProjectOption = None) -> None:
    """Stop a service, keeping its data and values."""
    _action("suspend", service_id, project)


def resume(service_id: str, project: ProjectOption = None) -> None:
    """Start a suspended service again."""
    _action("resume", service_id, project)


def delete(
    service_id: str,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    project: ProjectOption = None,
) -> None:
    """Delete a service and its data."""
    if not yes and not typer.confirm(f"Delete {service_id} and its data?", default=False):
        raise fail("not deleted", code=1)
    result = client(project).request("DELETE", f"/api/services/{service_id}")
    console.print(f"Deleted {service_id}")
    print_commands(result.get("commands", {}))


def rename(service_id: str, name: str, project: ProjectOption = None) -> None:
    """Change a service's display name."""
    client(project).request("PATCH", f"/api/services/{service_id}", json={"name": name})
    console.print(f"{service_id} is now named {name!r}")


def share(
    service_id: str,
    off: Annotated[bool, typer.Option("--off", help="Stop sharing.")] = False,
    project: ProjectOption = None,
) -> None:
    """Share a service with the project's members (or stop sharing)."""
    client(project).request("PATCH", f"/api/services/{service_id}", json={"shared": not off})
    console.print(f"{service_id} is {'private' if off else 'shared with the project'}")


def quota(project: ProjectOption = None, output: OutputOption = Output.table) -> None:
    """Show resources used and allowed in the project."""
    result = client(project).get("/api/quota")
    if output is Output.json:
        print_json(result)
        return
    rows = [
        {"resource": key, "used": result["usage"][key], "limit": result["limits"].get(key_limit)}
        for key, key_limit in (
            ("services", "max_services"),
            ("cpu", "cpu"),
            ("memory_mb", "memory_mb"),
        )
    ]
    print_table(rows, ["resource", "used", "limit"], title=f"Quota of {result['project']}")


def register(app: typer.Typer) -> None:
    app.add_typer(catalog_app, name="catalog")
    app.command("launch")(launch)
    app.add_typer(services_app, name="services")
    for command in (logs, events, suspend, resume, delete, rename, share, quota):
        app.command(command.__name__)(command)
