"""`datalab s3` and `datalab secrets`, run as a user would, against a platform serving the real
embedded SeaweedFS and OpenBao on a loopback port."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from datalab.processes import free_port

from .conftest import add_users, embedded_settings, serving, start_federated

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture(scope="module")
async def cli_env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[dict[str, str]]:
    root = tmp_path_factory.mktemp("cli")
    settings = embedded_settings(root / "data", server={"port": free_port()})
    platform, http = await start_federated(settings)
    try:
        async with serving(platform) as url:
            users = add_users(platform, http)
            yield {
                **os.environ,
                "DATALAB_URL": url,
                "DATALAB_TOKEN": users["alice"].token,
                "DATALAB_CREDENTIALS": str(root / "none.json"),
                "COLUMNS": "200",
            }
    finally:
        await http.aclose()
        await platform.stop()


async def datalab(env: dict[str, str], *args: str, input: str | None = None) -> tuple[int, str]:
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "datalab", *args],
        env=env,
        capture_output=True,
        text=True,
        input=input,
        timeout=120,
    )
    return result.returncode, result.stdout + result.stderr


async def test_s3_commands(cli_env: dict[str, str], tmp_path: Path) -> None:
    code, out = await datalab(cli_env, "s3", "ls")
    assert code == 0 and "s3://user-alice/" in out
    local = tmp_path / "data.csv"
    local.write_text("code,label\n01.11Z,Culture\n62.01Z,Programmation\n")
    code, out = await datalab(cli_env, "s3", "cp", str(local), "s3://user-alice/in/")
    assert code == 0 and "uploaded s3://user-alice/in/data.csv" in out
    code, out = await datalab(cli_env, "s3", "mb", "s3://user-alice/empty")
    assert code == 0
    code, out = await datalab(cli_env, "s3", "ls", "s3://user-alice/", "-o", "json")
    listing = json.loads(out)
    assert set(listing["folders"]) == {"in/", "empty/"}
    code, out = await datalab(cli_env, "s3", "preview", "s3://user-alice/in/data.csv")
    assert code == 0 and "Programmation" in out
    back = tmp_path / "back.csv"
    code, out = await datalab(cli_env, "s3", "cp", "s3://user-alice/in/data.csv", str(back))
    assert code == 0 and back.read_text() == local.read_text()
    code, out = await datalab(
        cli_env, "s3", "share", "s3://user-alice/in/data.csv", "--expires", "10m"
    )
    assert code == 0 and "X-Amz-Expires=600" in out
    code, out = await datalab(cli_env, "s3", "credentials", "--process")
    assert code == 0 and json.loads(out)["Version"] == 1
    code, out = await datalab(
        cli_env, "s3", "rm", "s3://user-alice/in/", "--recursive", input="n\n"
    )
    assert code != 0  # confirmation refused
    code, out = await datalab(cli_env, "s3", "rm", "s3://user-alice/in/", "-r", "--yes")
    assert code == 0 and "deleted 1 object" in out
    code, out = await datalab(cli_env, "s3", "rm", "s3://user-alice/empty", "-r", "--yes")
    assert code == 0 and "deleted 1 object" in out  # the folder's marker
    code, out = await datalab(cli_env, "s3", "ls", "s3://user-alice/", "-o", "json")
    assert json.loads(out)["folders"] == []  # nothing of either folder remains
    code, out = await datalab(cli_env, "s3", "ls", "s3://user-bob/")
    assert code == 1 and "not yours" in out and "Traceback" not in out
    code, out = await datalab(cli_env, "s3", "share", "s3://user-alice/x", "--expires", "soon")
    assert code == 2 and "duration" in out


async def test_secrets_commands(cli_env: dict[str, str]) -> None:
    code, out = await datalab(cli_env, "secrets", "set", "user-alice/db", "USER=alice", "PASSWORD")
    assert code != 0 or "version 1" in out  # no terminal: the prompt reads stdin
    code, out = await datalab(
        cli_env, "secrets", "set", "user-alice/db", "USER=alice", "PASSWORD", input="p w\np w\n"
    )
    assert code == 0, out
    assert "p w" not in out
    code, out = await datalab(cli_env, "secrets", "set", "user-alice/db", "PORT=5432", "--merge")
    assert code == 0
    code, out = await datalab(cli_env, "secrets", "get", "user-alice/db")
    assert out.splitlines() == ["PASSWORD=p w", "PORT=5432", "USER=alice"]
    code, out = await datalab(cli_env, "secrets", "export", "user-alice/db")
    assert "export PASSWORD='p w'" in out
    code, out = await datalab(cli_env, "secrets", "mv", "user-alice/db", "user-alice/pg")
    assert code == 0
    code, out = await datalab(cli_env, "secrets", "ls", "user-alice")
    assert out.split() == ["user-alice/pg"]
    code, out = await datalab(cli_env, "secrets", "rm", "user-alice/pg", "--yes")
    assert code == 0
    code, out = await datalab(cli_env, "secrets", "get", "user-alice/pg")
    assert code == 1 and "no secret" in out
    # a Vault token for the bao / vault CLIs, as shell exports
    code, out = await datalab(cli_env, "secrets", "token")
    assert code == 0
    exports = dict(line.removeprefix("export ").split("=", 1) for line in out.splitlines() if line)
    assert exports["VAULT_TOP_DIR"] == "user-alice" and exports["VAULT_TOKEN"]
    assert exports["VAULT_ADDR"].startswith("http://127.0.0.1:")
