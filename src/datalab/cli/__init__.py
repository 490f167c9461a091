"""The ``datalab`` command line (typer + rich).

Every command except ``up`` and ``config`` talks to the platform's REST API with the token stored
by ``datalab login``. Exit codes: 0 success, 1 the platform refused or failed (message printed),
2 wrong usage.
"""

from __future__ import annotations

import typer

from datalab.cli import accounts, admin, audit, secrets, server, services, storage
from datalab.cli.common import run_safely

app = typer.Typer(
    name="datalab",
    help="A data science platform: launch services from a catalog, on this machine or Kubernetes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
server.register(app)
accounts.register(app)
services.register(app)
storage.register(app)
secrets.register(app)
audit.register(app)
admin.register(app)


def main() -> None:
    run_safely(app)
