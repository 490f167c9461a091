"""``python -m autocode.serve``: run the prediction API; ``keys`` and ``users`` manage its
credentials. Options override the ``AUTOCODE_API_*`` environment variables."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from autocode.errors import UserError, reported

app = typer.Typer(
    help="The autocode prediction API. Without a command: run the server.",
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
keys_app = typer.Typer(
    help="API keys (stored hashed; shown once at creation).", no_args_is_help=True
)
users_app = typer.Typer(help="HTTP Basic users (argon2 hashes).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(users_app, name="users")
err = Console(stderr=True)


def main() -> None:
    app()


def _friendly(function: Callable[..., None]) -> Callable[..., None]:
    """Errors the user can fix become one line on stderr and exit code 2 (also when these
    commands are mounted under another CLI, e.g. ``autocode serve``)."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        with reported():  # AuthFileError and the others derive from UserError
            function(*args, **kwargs)

    return wrapper


# -- the server -----------------------------------------------------------------------------------
@app.callback(invoke_without_command=True)
@_friendly
def serve(
    ctx: typer.Context,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="models:/<name>@<alias>, models:/<name>/<version>, runs:/..., "
            "or a local model directory (env AUTOCODE_API_MODEL).",
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    uds: Annotated[
        Path | None,
        typer.Option(help="Listen on this Unix socket instead of --host/--port."),
    ] = None,
    threshold: Annotated[
        float | None, typer.Option(help="IC threshold of the automatic decision.")
    ] = None,
    log_dir: Annotated[Path | None, typer.Option(help="Prediction log spool directory.")] = None,
    log_s3_uri: Annotated[
        str | None, typer.Option(help="Ship the prediction log to s3://<bucket>/<prefix>.")
    ] = None,
    api_keys_file: Annotated[Path | None, typer.Option(help="API keys file.")] = None,
    users_file: Annotated[Path | None, typer.Option(help="Basic users file.")] = None,
    allow_anonymous: Annotated[
        bool | None,
        typer.Option(
            "--allow-anonymous/--require-auth",
            help="Serve without credentials when none are configured (development only).",
        ),
    ] = None,
    poll_interval: Annotated[
        float | None, typer.Option(help="Seconds between checks for a new model version.")
    ] = None,
    root_path: Annotated[
        str | None, typer.Option(help="Path prefix when served behind a proxy.")
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error.")] = "info",
) -> None:
    """Run the API server (one process; scale with replicas)."""
    if ctx.invoked_subcommand is not None:
        return
    import logging

    import uvicorn
    from pydantic import ValidationError

    from autocode.serve.app import ConfigurationError, create_app
    from autocode.serve.settings import Settings

    overrides = {
        "model": model,
        "threshold": threshold,
        "log_dir": log_dir,
        "log_s3_uri": log_s3_uri,
        "api_keys_file": api_keys_file,
        "users_file": users_file,
        "allow_anonymous": allow_anonymous,
        "poll_interval_s": poll_interval,
        "root_path": root_path,
    }
    try:
        given: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
        settings = Settings(**given)  # the environment fills the rest
        application = create_app(settings)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        raise UserError(f"invalid settings: {problems}") from None
    except ConfigurationError as exc:
        raise UserError(str(exc)) from None
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(
        application,
        host=host,
        port=port,
        uds=str(uds) if uds else None,
        loop="uvloop",
        http="httptools",
        access_log=False,  # request counts and latencies are in /metrics
        log_level=log_level.lower(),
        timeout_graceful_shutdown=30,
        server_header=False,
    )


# -- credentials ----------------------------------------------------------------------------------
def _file(path: Path | None, variable: str, what: str) -> Path:
    path = path or (Path(os.environ[variable]) if os.environ.get(variable) else None)
    if path is None:
        raise UserError(f"which {what} file? Pass --file or set {variable}")
    return path


KeysFileOption = Annotated[
    Path | None,
    typer.Option("--file", "-f", help="The keys file (env AUTOCODE_API_API_KEYS_FILE)."),
]
UsersFileOption = Annotated[
    Path | None,
    typer.Option("--file", "-f", help="The users file (env AUTOCODE_API_USERS_FILE)."),
]


@keys_app.command("add")
@_friendly
def keys_add(
    name: Annotated[str, typer.Argument(help="Who uses the key (an application name).")],
    file: KeysFileOption = None,
) -> None:
    """Create a key; prints it once on stdout (only its hash is stored)."""
    from autocode.serve.auth import KeysFile

    path = _file(file, "AUTOCODE_API_API_KEYS_FILE", "keys")
    entry, secret = KeysFile(path).add(name)
    err.print(f"key {entry.id} ({entry.name}) added to {path}; it is shown only now:")
    print(secret)


@keys_app.command("list")
@_friendly
def keys_list(
    file: KeysFileOption = None,
    all_keys: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
) -> None:
    """List the keys (never the keys themselves: they are not stored)."""
    from autocode.serve.auth import KeysFile

    path = _file(file, "AUTOCODE_API_API_KEYS_FILE", "keys")
    table = Table("id", "name", "created", "status")
    for key in KeysFile(path).load():
        if key.active or all_keys:
            status = "active" if key.active else f"revoked {key.revoked_at}"
            table.add_row(key.id, key.name, key.created_at, status)
    Console().print(table)


@keys_app.command("revoke")
@_friendly
def keys_revoke(
    ident: Annotated[str, typer.Argument(help="Id or name of the key.")],
    file: KeysFileOption = None,
) -> None:
    """Revoke a key (running servers stop accepting it within a second)."""
    from autocode.serve.auth import KeysFile

    path = _file(file, "AUTOCODE_API_API_KEYS_FILE", "keys")
    key = KeysFile(path).revoke(ident)
    err.print(f"key {key.id} ({key.name}) revoked")


@users_app.command("add")
@_friendly
def users_add(
    name: Annotated[str, typer.Argument(help="User name.")],
    file: UsersFileOption = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin.")
    ] = False,
    replace: Annotated[bool, typer.Option(help="Set the password of an existing user.")] = False,
) -> None:
    """Add a user; without --password-stdin a password is generated and printed once."""
    from autocode.serve.auth import UsersFile

    path = _file(file, "AUTOCODE_API_USERS_FILE", "users")
    password = sys.stdin.readline().rstrip("\n") if password_stdin else None
    chosen = UsersFile(path).add(name, password, replace=replace)
    err.print(f"user {name} saved in {path}")
    if password is None:
        err.print("generated password (shown only now):")
        print(chosen)


@users_app.command("list")
@_friendly
def users_list(file: UsersFileOption = None) -> None:
    """List the users."""
    from autocode.serve.auth import UsersFile

    path = _file(file, "AUTOCODE_API_USERS_FILE", "users")
    table = Table("name", "created", "status")
    for user in UsersFile(path).load():
        table.add_row(user.name, user.created_at, "disabled" if user.disabled else "active")
    Console().print(table)


@users_app.command("remove")
@_friendly
def users_remove(
    name: Annotated[str, typer.Argument(help="User name.")], file: UsersFileOption = None
) -> None:
    """Remove a user."""
    from autocode.serve.auth import UsersFile

    path = _file(file, "AUTOCODE_API_USERS_FILE", "users")
    UsersFile(path).remove(name)
    err.print(f"user {name} removed")
