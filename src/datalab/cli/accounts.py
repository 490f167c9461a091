"""``datalab login``, ``whoami``, ``tokens``, and the admin commands ``users`` and ``projects``."""

from __future__ import annotations

import socket
import sys
from typing import Annotated

import typer

from datalab.cli.common import (
    Output,
    OutputOption,
    ProjectOption,
    UrlOption,
    client,
    console,
    fail,
    print_json,
    print_table,
)
from datalab.client import DEFAULT_URL, Client, credentials_path, save_credentials

PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from standard input.")
]


def _read_password(from_stdin: bool, prompt: str = "Password") -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    return typer.prompt(prompt, hide_input=True)


def login(
    url: UrlOption = None,
    username: Annotated[str | None, typer.Option("--username", "-u")] = None,
    password_stdin: PasswordStdin = False,
) -> None:
    """Sign in and store an API token for the CLI."""
    base = Client.from_environment(url=url)
    target = (url or base.url or DEFAULT_URL).rstrip("/")
    user = username or typer.prompt("User name")
    password = _read_password(password_stdin)
    anonymous = Client(url=target, token=None)
    created = anonymous.post(
        "/api/auth/token",
        json={"username": user, "password": password, "token_name": f"cli@{socket.gethostname()}"},
    )
    path = save_credentials(target, created["token"], user)
    console.print(f"Logged in to {target} as {user}; token stored in {path}")


def logout() -> None:
    """Forget the stored token (it stays valid until revoked: see `datalab tokens`)."""
    path = credentials_path()
    path.unlink(missing_ok=True)
    console.print(f"Removed {path}")


def whoami(project: ProjectOption = None, output: OutputOption = Output.table) -> None:
    """Show who you are and your projects."""
    me = client(project).get("/api/me")
    if output is Output.json:
        print_json(me)
        return
    role = "admin" if me["is_admin"] else "user"
    console.print(f"{me['name']} ({role}), acting in project {me['project']}")
    print_table(me["projects"], ["id", "name", "role", "personal"], title="Projects")


tokens_app = typer.Typer(help="Your personal API tokens.", no_args_is_help=True)


@tokens_app.command("list")
def tokens_list(output: OutputOption = Output.table) -> None:
    """List your API tokens."""
    tokens = client().get("/api/me/tokens")
    if output is Output.json:
        print_json(tokens)
    else:
        print_table(tokens, ["id", "name", "prefix", "created_at", "expires_at", "revoked_at"])


@tokens_app.command("create")
def tokens_create(
    name: str,
    ttl_days: Annotated[int | None, typer.Option(help="Lifetime in days.")] = None,
) -> None:
    """Create an API token; it is printed once."""
    created = client().post("/api/me/tokens", json={"name": name, "ttl_days": ttl_days})
    console.print(f"Token {created['name']!r} (id {created['id']}), shown once:")
    typer.echo(created["token"])


@tokens_app.command("revoke")
def tokens_revoke(token_id: int) -> None:
    """Revoke an API token."""
    client().request("DELETE", f"/api/me/tokens/{token_id}")
    console.print(f"Revoked token {token_id}")


users_app = typer.Typer(help="Manage users (administrators).", no_args_is_help=True)


@users_app.command("add")
def users_add(
    name: str,
    email: Annotated[str | None, typer.Option()] = None,
    admin: Annotated[bool, typer.Option("--admin", help="Make an administrator.")] = False,
    password_stdin: PasswordStdin = False,
) -> None:
    """Create a user (and their personal project). Without --password-stdin a password is
    generated and printed once."""
    body: dict[str, object] = {"name": name, "email": email, "is_admin": admin}
    if password_stdin:
        body["password"] = _read_password(True)
    created = client().post("/api/users", json=body)
    console.print(f"Created user {created['name']}")
    if created.get("password"):
        console.print(f"  password (shown once): {created['password']}", highlight=False)


@users_app.command("list")
def users_list(output: OutputOption = Output.table) -> None:
    """List users."""
    users = client().get("/api/users")
    if output is Output.json:
        print_json(users)
    else:
        print_table(users, ["name", "email", "is_admin", "disabled", "created_at"])


@users_app.command("disable")
def users_disable(name: str) -> None:
    """Disable a user: revoke their API and Vault tokens, end their web sessions, suspend
    their services."""
    client().post(f"/api/users/{name}/disable")
    console.print(f"Disabled {name}")


@users_app.command("enable")
def users_enable(name: str) -> None:
    """Enable a disabled user."""
    client().post(f"/api/users/{name}/enable")
    console.print(f"Enabled {name}")


@users_app.command("reset-password")
def users_reset_password(name: str, password_stdin: PasswordStdin = False) -> None:
    """Set a new password (generated and printed once unless given on stdin)."""
    body = {"password": _read_password(True)} if password_stdin else {}
    result = client().post(f"/api/users/{name}/reset-password", json=body)
    console.print(f"Password of {name} reset")
    if result.get("password"):
        console.print(f"  new password (shown once): {result['password']}", highlight=False)


projects_app = typer.Typer(help="Projects and their members.", no_args_is_help=True)


@projects_app.command("list")
def projects_list(
    all: Annotated[bool, typer.Option("--all", help="Every project (admin).")] = False,
    output: OutputOption = Output.table,
) -> None:
    """List your projects (or all of them, for admins)."""
    projects = client().get("/api/projects", params={"all": all})
    if output is Output.json:
        print_json(projects)
        return
    for project in projects:
        members = ", ".join(f"{m['user']} ({m['role']})" for m in project.get("members") or [])
        project["members_list"] = members
    print_table(projects, ["id", "name", "personal", "members_list"])


@projects_app.command("add")
def projects_add(
    name: Annotated[str, typer.Argument(help="Short name; the id gets the region's prefix.")],
    display_name: Annotated[str, typer.Option(help="Display name.")] = "",
) -> None:
    """Create a shared project (admin); you become its admin member."""
    created = client().post("/api/projects", json={"name": name, "display_name": display_name})
    console.print(f"Created project {created['id']}; you are its admin member")


@projects_app.command("members")
def projects_members(
    project_id: str,
    add: Annotated[list[str] | None, typer.Option("--add", help="User to add.")] = None,
    remove: Annotated[list[str] | None, typer.Option("--remove", help="User to remove.")] = None,
    role: Annotated[str, typer.Option(help="Role for --add: member or admin.")] = "member",
) -> None:
    """Show, add or remove members of a project (admin for changes)."""
    api = client()
    for user in add or []:
        api.post(f"/api/projects/{project_id}/members", json={"user": user, "role": role})
        console.print(f"Added {user} to {project_id} as {role}")
    for user in remove or []:
        api.request("DELETE", f"/api/projects/{project_id}/members/{user}")
        console.print(f"Removed {user} from {project_id}")
    projects = api.get("/api/projects", params={"all": True} if (add or remove) else {})
    match = [p for p in projects if p["id"] == project_id]
    if not match:
        raise fail(f"no project {project_id!r} among yours")
    print_table(match[0]["members"] or [], ["user", "role"], title=project_id)


envs_app = typer.Typer(
    help="Cached service environments of the local backend (admin).", no_args_is_help=True
)


@envs_app.command("list")
def envs_list(output: OutputOption = Output.table) -> None:
    """List cached environments: packages, size, last use, services using them."""
    envs = client().get("/api/envs")
    if output is Output.json:
        print_json(envs)
        return
    for env in envs:
        env["packages"] = ", ".join(env["packages"]) or "(none)"
        env["services"] = ", ".join(env["services"])
    print_table(envs, ["key", "packages", "python", "size_mb", "last_used", "services"])


@envs_app.command("prune")
def envs_prune(
    older_than_days: Annotated[
        float | None, typer.Option(help="Only environments unused for this many days.")
    ] = None,
) -> None:
    """Delete cached environments that no service uses."""
    params = {"older_than_days": older_than_days} if older_than_days is not None else {}
    removed = client().post("/api/envs/prune", params=params)["removed"]
    console.print(
        f"Removed {len(removed)} environment(s)" + (": " + ", ".join(removed) if removed else "")
    )


def register(app: typer.Typer) -> None:
    app.command("login")(login)
    app.command("logout")(logout)
    app.command("whoami")(whoami)
    app.add_typer(tokens_app, name="tokens")
    app.add_typer(users_app, name="users")
    app.add_typer(projects_app, name="projects")
    app.add_typer(envs_app, name="envs")
