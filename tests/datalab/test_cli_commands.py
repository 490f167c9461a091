"""The `datalab` lines the platform prints as equivalent commands are commands of the CLI, and
running them does what they say (a real platform on a loopback port, the in-memory backend)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from typer.testing import CliRunner

from datalab import commands
from datalab.cli import app
from datalab.config import Settings, load_settings
from datalab.identity import accounts
from datalab.platform import Platform
from datalab.processes import free_port
from datalab.values import equivalent_commands

from .conftest import ADMIN_PASSWORD
from .storage.conftest import serving

pytestmark = pytest.mark.anyio

TEAM = "project-team"


def _printable_lines() -> list[str]:
    """Every kind of `datalab` line commands.py and launch.equivalent_commands print."""
    lines = [commands.for_listing(TEAM)["datalab"]]
    lines += [action["datalab"] for action in commands.for_service("nb-1", TEAM).values()]
    for project, shared in ((None, False), (TEAM, True)):
        launch = equivalent_commands(
            "datalab", "jupyter-python", "1.0.0", "nb-1",
            {"git": {"name": "Alice, M."}, "tags": ["a", "b"]}, {},
            namespace=TEAM, project=project, shared=shared, friendly_name="My notebook",
        )  # fmt: skip
        lines.append(launch["datalab"])
    return lines


@pytest.mark.parametrize("line", _printable_lines())
def test_every_printed_datalab_line_parses(line: str) -> None:
    args = shlex.split(line)
    assert args[0] == "datalab"
    # --help is answered by the innermost command once every option before it has parsed: an
    # unknown command or option fails with usage (exit code 2)
    result = CliRunner().invoke(app, [*args[1:], "--help"])
    assert result.exit_code == 0, result.output
    usage = next(s for s in map(str.strip, result.output.splitlines()) if s.startswith("Usage:"))
    assert usage.startswith(f"Usage: {_command_path(args)} "), usage


def _command_path(args: list[str]) -> str:
    """The command a line runs: its leading words that name (sub)commands."""
    command: Any = typer.main.get_command(app)
    path = [args[0]]
    for word in args[1:]:
        command = getattr(command, "commands", {}).get(word)
        if command is None:
            break
        path.append(word)
    return " ".join(path)


@dataclass
class Served:
    platform: Platform
    url: str
    tmp_path: Path

    def token(self, user_name: str, *, create: bool = False) -> str:
        with self.platform.db.session() as session:
            if create:
                accounts.create_user(
                    session,
                    self.platform.settings.region,
                    user_name,
                    password=f"{user_name}-password-123",
                )
            user = accounts.get_user(session, user_name)
            return accounts.create_token(session, user, "tests", ttl_days=1)[1]

    async def cli(self, token: str, *args: str, input: str | None = None) -> str:
        """Run a CLI command as the token's user (in a thread: the platform answers meanwhile);
        returns its output, after checking it succeeded."""
        env = {
            "DATALAB_URL": self.url,
            "DATALAB_TOKEN": token,
            "DATALAB_CREDENTIALS": str(self.tmp_path / "none.json"),
            "DATALAB_PROJECT": None,
            "COLUMNS": "200",
        }
        result = await asyncio.to_thread(
            CliRunner().invoke, app, list(args), input=input, env=env, catch_exceptions=True
        )
        assert result.exit_code == 0, (args, result.output, result.exception)
        return result.output

    async def api(self, token: str, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {token}"}
        if project := kwargs.pop("project", None):
            headers["X-Datalab-Project"] = project
        async with httpx.AsyncClient(base_url=self.url, headers=headers) as http:
            response = await http.request(method, path, **kwargs)
        assert response.is_success, response.text
        return response.json()


@pytest.fixture
async def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Served]:
    monkeypatch.delenv("DATALAB_CONFIG", raising=False)
    settings = load_settings(
        None,
        data_dir=tmp_path / "data",
        backend={"name": "memory"},
        storage={"mode": "disabled"},
        secrets={"mode": "disabled"},
        server={"port": free_port()},
    )
    async with serve(settings, tmp_path) as served:
        yield served


@contextlib.asynccontextmanager
async def serve(settings: Settings, tmp_path: Path) -> AsyncIterator[Served]:
    """A platform started with ``settings`` (its admin's password: ADMIN_PASSWORD), on its
    loopback port until the block ends."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DATALAB_ADMIN_PASSWORD", ADMIN_PASSWORD)
        patch.delenv("DATALAB_CONFIG", raising=False)
        platform = Platform.create(settings)
        platform.ensure_admin()
    await platform.start()
    try:
        async with serving(platform) as url:
            yield Served(platform, url, tmp_path)
    finally:
        await platform.stop()


async def test_projects_add_makes_its_creator_an_admin_member(served: Served) -> None:
    admin = served.token("admin")
    assert "you are its admin member" in await served.cli(admin, "projects", "add", "team")
    members = await served.cli(admin, "projects", "members", TEAM)
    assert "admin" in members.split()
    assert f"acting in project {TEAM}" in await served.cli(admin, "whoami", "--project", TEAM)


async def _team_service(served: Served) -> tuple[str, dict[str, Any]]:
    """Alice's shared service in the team project, launched through the API."""
    admin, alice = served.token("admin"), served.token("alice", create=True)
    await served.api(admin, "POST", "/api/projects", json={"name": "team"})
    await served.api(admin, "POST", f"/api/projects/{TEAM}/members", json={"user": "alice"})
    launched = await served.api(
        alice,
        "POST",
        "/api/services",
        project=TEAM,
        json={
            "chart": "jupyter-python",
            "name": "nb-1",
            "friendly_name": "Team notebook",
            "shared": True,
            "set": ["resources.limits.cpu=500m"],
        },
    )
    return alice, launched


async def test_printed_service_commands_run(served: Served) -> None:
    alice, _ = await _team_service(served)
    service = await served.api(alice, "GET", "/api/services/nb-1", project=TEAM)
    listing = await served.api(alice, "GET", "/api/services", project=TEAM)
    events = await served.api(alice, "GET", "/api/services/nb-1/events", project=TEAM)
    assert set(service["commands"]) == {"status", "logs", "events", "suspend", "resume", "delete"}

    def run(line: str, input: str | None = None) -> Any:
        return served.cli(alice, *shlex.split(line)[1:], input=input)

    assert "Team notebook" in await run(service["commands"]["status"]["datalab"])
    assert "nb-1" in await run(listing["commands"]["datalab"])
    assert "memory backend" in await run(service["commands"]["logs"]["datalab"])
    assert "Started" in await run(events["commands"]["datalab"])
    assert "Started" in await run(service["commands"]["events"]["datalab"])
    assert "nb-1: suspended" in await run(service["commands"]["suspend"]["datalab"])
    assert "nb-1: running" in await run(service["commands"]["resume"]["datalab"])
    assert "Deleted nb-1" in await run(service["commands"]["delete"]["datalab"], input="y\n")
    assert (await served.api(alice, "GET", "/api/services", project=TEAM))["services"] == []


async def test_printed_launch_command_launches_the_same_service(served: Served) -> None:
    alice, launched = await _team_service(served)
    line = launched["commands"]["datalab"]
    assert f"--project {TEAM}" in line and "--shared" in line
    await served.api(alice, "DELETE", "/api/services/nb-1", project=TEAM)
    await served.cli(alice, *shlex.split(line)[1:])
    again = await served.api(alice, "GET", "/api/services/nb-1", project=TEAM)
    assert again["shared"] is True and again["name"] == "Team notebook"
    assert again["values"]["resources"]["limits"]["cpu"] == "500m"
    assert (await served.api(alice, "GET", "/api/services"))["services"] == []  # not personal


async def test_an_admin_lists_and_stops_anyones_service_with_the_printed_commands(
    served: Served,
) -> None:
    """``datalab admin services`` lists every service; the commands an administrator is shown
    for another user's service name the administrator's project, and they run."""
    await _team_service(served)
    admin = served.token("admin")
    listing = await served.cli(admin, "admin", "services", "--owner", "alice")
    assert "nb-1" in listing and TEAM in listing
    assert "nb-1" not in await served.cli(admin, "admin", "services", "--owner", "admin")
    service = await served.api(admin, "GET", "/api/services/nb-1")
    suspend, delete = (service["commands"][a]["datalab"] for a in ("suspend", "delete"))
    assert suspend == "datalab suspend nb-1 --project user-admin"

    def run(line: str, input: str | None = None) -> Any:
        return served.cli(admin, *shlex.split(line)[1:], input=input)

    assert "nb-1: suspended" in await run(suspend)
    assert "Deleted nb-1" in await run(delete, input="y\n")
    assert (await served.api(admin, "GET", "/api/admin/services"))["services"] == []
    assert "no orphans: the memory backend" in await served.cli(admin, "admin", "orphans")


async def test_launch_merges_several_values_files_as_helm_does(served: Served) -> None:
    """``datalab launch -f a -f b``: the server merges the files deeply, in order."""
    alice = served.token("vera", create=True)
    first = served.tmp_path / "a.yaml"
    first.write_text("resources:\n  limits:\n    cpu: 1500m\n    memory: 3Gi\n")
    second = served.tmp_path / "b.yaml"
    second.write_text("resources:\n  limits:\n    cpu: 1200m\n")
    output = await served.cli(
        alice, "launch", "jupyter-python", "-f", str(first), "-f", str(second),
        "--dry-run", "-o", "json",
    )  # fmt: skip
    limits = json.loads(output)["values"]["resources"]["limits"]
    assert limits == {"cpu": "1200m", "memory": "3Gi"}
