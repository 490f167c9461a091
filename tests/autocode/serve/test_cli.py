"""``python -m autocode.serve``: keys and users commands, configuration errors, --help."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from autocode.serve import cli
from autocode.serve.auth import Authenticator, KeysFile, UsersFile

runner = CliRunner()


def invoke(*args: str, stdin: str | None = None, env: dict[str, str] | None = None):
    return runner.invoke(cli.app, list(args), input=stdin, env=env)


def test_keys_add_list_revoke(tmp_path) -> None:
    path = tmp_path / "keys.json"
    added = invoke("keys", "add", "dashboards", "--file", str(path))
    assert added.exit_code == 0, added.output
    key = added.stdout.strip().splitlines()[-1]
    assert key.startswith("acapi_") and len(key) > 40
    stored = json.loads(path.read_text())["keys"][0]
    assert stored["name"] == "dashboards" and key not in path.read_text()  # only the hash
    assert stored["hash"].startswith("sha256:")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert Authenticator(path)._check_key(key).name == "dashboards"

    listed = invoke("keys", "list", env={"AUTOCODE_API_API_KEYS_FILE": str(path)})
    assert listed.exit_code == 0 and stored["id"] in listed.stdout and key not in listed.stdout
    duplicate = invoke("keys", "add", "dashboards", "--file", str(path))
    assert duplicate.exit_code != 0
    assert invoke("keys", "revoke", stored["id"], "--file", str(path)).exit_code == 0
    assert "dashboards" not in invoke("keys", "list", "--file", str(path)).stdout
    assert "revoked" in invoke("keys", "list", "--all", "--file", str(path)).stdout
    assert not KeysFile(path).load()[0].active


def test_users_add_list_remove(tmp_path) -> None:
    path = tmp_path / "users.json"
    generated = invoke("users", "add", "alice", "--file", str(path))
    assert generated.exit_code == 0, generated.output
    password = generated.stdout.strip().splitlines()[-1]
    assert UsersFile(path).load()[0].hash.startswith("$argon2id$")
    assert password not in path.read_text()
    chosen = invoke(
        "users", "add", "bob", "--file", str(path), "--password-stdin", stdin="bob-password-1\n"
    )
    assert chosen.exit_code == 0 and "bob-password-1" not in chosen.stdout
    assert Authenticator(users_file=path)._verify(UsersFile(path).load()[1], "bob-password-1")
    assert "alice" in invoke("users", "list", "--file", str(path)).stdout
    assert invoke("users", "remove", "alice", "--file", str(path)).exit_code == 0
    assert [u.name for u in UsersFile(path).load()] == ["bob"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["keys", "list"], "Pass --file or set AUTOCODE_API_API_KEYS_FILE"),
        (["keys", "revoke", "nope", "--file", "{tmp}/k.json"], "no active key"),
        (["--model", "{tmp}"], "no credentials configured"),
        (["--model", "models:/x", "--allow-anonymous"], "models:/<name>@<alias>"),
        (["--model", "x", "--allow-anonymous", "--threshold", "2"], "threshold"),
    ],
)
def test_errors_are_one_line_with_exit_code_2(tmp_path, monkeypatch, capsys, args, message):
    for name in list(os.environ):
        if name.startswith("AUTOCODE_API_"):
            monkeypatch.delenv(name)
    argv = ["python -m autocode.serve", *(a.format(tmp=tmp_path) for a in args)]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_module_entry_point() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "autocode.serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and "keys" in result.stdout and "--model" in result.stdout


@pytest.mark.parametrize("args", [[], ["keys"], ["users"]])
def test_help(args) -> None:
    result = invoke(*args, "--help")
    assert result.exit_code == 0
    assert "Usage" in result.stdout
