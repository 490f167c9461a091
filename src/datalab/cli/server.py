"""``datalab up`` (run the platform in the foreground) and ``datalab config``."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from datalab.allocator import return_large_buffers_to_the_system
from datalab.cli.common import console, print_json
from datalab.config import Settings, load_settings, mask_url_password
from datalab.forwarded import proxy_header_options

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Config file (default: $DATALAB_CONFIG or ./datalab.yaml).",
        exists=False,
        dir_okay=False,
    ),
]


#: the first administrator's password, when the administrator chooses it (else generated)
ADMIN_PASSWORD_VARIABLE = "DATALAB_ADMIN_PASSWORD"  # noqa: S105 (a variable name)

_MIGRATE = "import sys; from datalab.db import Database; Database(sys.stdin.read()).migrate()"


def _current_revision(database_url: str) -> str | None:
    """The database's schema revision (None: empty); exits with one line when it cannot be
    reached (the driver's reason, never the password)."""
    from sqlalchemy.exc import DBAPIError

    from datalab.db import Database, schema_revision

    database = Database(database_url)
    try:
        return schema_revision(database.engine)
    except DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else repr(exc)
        where = mask_url_password(database_url)
        raise SystemExit(f"error: cannot reach the database {where}: {reason}") from None
    finally:
        database.dispose()


def _migrate_in_a_child_process(database_url: str) -> str | None:
    """Bring the schema up to date in a short-lived child process, so that Alembic (~14 MB)
    never stays in the server: the platform then finds the schema current. The URL goes
    through stdin (it may hold a password; argv is visible to every local user). Returns the
    revision the database had."""
    from datalab.db import SCHEMA_REVISION

    before = _current_revision(database_url)
    if before == SCHEMA_REVISION:
        return before
    done = subprocess.run(
        [sys.executable, "-c", _MIGRATE], input=database_url, text=True, capture_output=True
    )
    if done.returncode != 0:
        raise SystemExit(f"error: the database could not be migrated:\n{done.stderr[-2000:]}")
    return before


def up(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="Listen address (server.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (server.port).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Data directory (data_dir).")] = None,
) -> None:
    """Start the platform in the foreground; Ctrl-C stops it cleanly."""
    import uvicorn

    return_large_buffers_to_the_system()

    from datalab.app import create_app
    from datalab.platform import Platform

    overrides: dict[str, object] = {}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    settings = load_settings(config, **overrides)
    if host is not None or port is not None:
        server = settings.server.model_copy(
            update={k: v for k, v in {"host": host, "port": port}.items() if v is not None}
        )
        settings = settings.model_copy(update={"server": server})
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # one INFO line per HTTP call the platform makes (STS, Vault, readiness probes) is noise
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.root.level))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _migrate_in_a_child_process(settings.db_url)
    platform = Platform.create(settings)
    # a password the administrator chose is theirs: never echoed (terminals are logged, shared)
    chosen = bool(os.environ.get(ADMIN_PASSWORD_VARIABLE))
    admin_password = platform.ensure_admin()
    url = settings.server.url()
    console.print(f"[bold]{settings.instance_name}[/bold] on {url}  (data in {settings.data_dir})")
    console.print(f"backend: {settings.backend.name}; API docs: {url}/api/docs")
    if admin_password is not None:
        # a generated one is printed once on the terminal, never logged
        password_line = f"the one in {ADMIN_PASSWORD_VARIABLE}" if chosen else admin_password
        console.print(
            "[yellow]First start: created the administrator account.[/yellow]\n"
            f"  user: admin\n  password: {password_line}\n"
            f"  then: datalab login --url {url} --username admin",
            highlight=False,
        )
    uvicorn.run(create_app(platform), **uvicorn_options(settings))


def migrate(config: ConfigOption = None) -> None:
    """Bring the database's schema to this release's, then exit (``datalab up`` does it too
    before serving; the platform's Helm chart runs this as a Job before installs and upgrades)."""
    from datalab.db import SCHEMA_REVISION

    settings = load_settings(config)
    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    before = _migrate_in_a_child_process(settings.db_url)
    where = settings.masked_database_url()
    if before == SCHEMA_REVISION:
        console.print(f"{where}: the schema is current ({SCHEMA_REVISION})", highlight=False)
    else:
        console.print(
            f"{where}: schema migrated from {before or 'an empty database'} to {SCHEMA_REVISION}",
            highlight=False,
        )


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """How ``datalab up`` runs uvicorn (tests serve the app with the same options)."""
    return {
        "host": settings.server.host,
        "port": settings.server.port,
        "log_level": settings.log_level,
        "lifespan": "on",
        "ws": "websockets-sansio",  # the proxy's WebSockets, without the deprecated legacy API
        "timeout_graceful_shutdown": 10,
        **proxy_header_options(settings.server),
    }


config_app = typer.Typer(
    help="Show the effective configuration or its schema.", no_args_is_help=True
)


@config_app.command("show")
def config_show(
    config: ConfigOption = None,
    output: Annotated[str, typer.Option("--output", "-o", help="yaml or json")] = "yaml",
) -> None:
    """Print the effective configuration (file + environment), secrets masked."""
    data = load_settings(config).masked()
    if output == "json":
        print_json(data)
    else:
        typer.echo(yaml.safe_dump(data, sort_keys=False).rstrip())


@config_app.command("schema")
def config_schema() -> None:
    """Print the JSON schema of datalab.yaml."""
    typer.echo(json.dumps(Settings.model_json_schema(), indent=2))


def register(app: typer.Typer) -> None:
    app.command("up")(up)
    app.command("migrate")(migrate)
    app.add_typer(config_app, name="config")
