"""One real `datalab up` subprocess, driven by the real `datalab` CLI, as a user would."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from datalab.catalog import SHIPPED_CATALOG_DIR
from datalab.processes import free_port

pytestmark = pytest.mark.slow

DATALAB = [sys.executable, "-m", "datalab"]


CHARTS = Path(__file__).resolve().parents[1] / "fixtures" / "charts"


@pytest.fixture(scope="module")
def server() -> Iterator[dict[str, str]]:
    # not under pytest's tmp dir (mode 700): services run under per-user accounts when root
    root = Path(tempfile.mkdtemp(prefix="datalab-smoke-"))
    os.chmod(root, 0o711)
    port = free_port()
    catalogs = [
        {"id": "datalab", "name": "Datalab", "location": str(SHIPPED_CATALOG_DIR)},
        {"id": "test", "name": "Test charts", "location": str(CHARTS)},
    ]
    env = {
        **os.environ,
        "DATALAB_CATALOGS": json.dumps(catalogs),
        "DATALAB_DATA_DIR": str(root / "data"),
        "DATALAB_SERVER__PORT": str(port),
        "DATALAB_CREDENTIALS": str(root / "credentials.json"),
        "DATALAB_URL": f"http://127.0.0.1:{port}",
    }
    env.pop("DATALAB_ADMIN_PASSWORD", None)
    log = (root / "up.log").open("w")
    process = subprocess.Popen([*DATALAB, "up"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = env["DATALAB_URL"]
    # a first start initialises OpenBao's storage: tens of seconds on a busy machine
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/api/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        process.kill()
        process.wait()
        pytest.fail(f"datalab up did not answer:\n{(root / 'up.log').read_text()}")
    output = (root / "up.log").read_text()
    password = next(
        line.split("password:", 1)[1].strip() for line in output.splitlines() if "password:" in line
    )
    yield {**env, "ADMIN_PASSWORD": password, "LOG": str(root / "up.log")}
    process.send_signal(signal.SIGINT)  # Ctrl-C
    assert process.wait(timeout=30) == 0
    log.close()
    shutil.rmtree(root, ignore_errors=True)


def cli(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DATALAB, *args], env=env, input=stdin, capture_output=True, text=True, timeout=60
    )


def test_first_start_prints_the_admin_password_once_and_never_logs_it(
    server: dict[str, str],
) -> None:
    text = Path(server["LOG"]).read_text()
    assert text.count(server["ADMIN_PASSWORD"]) == 1  # on the terminal, once
    # where the embedded servers listen, for the user's own tools
    assert "object storage (S3, embedded): http://127.0.0.1:" in text
    assert "secrets (Vault API, embedded): http://127.0.0.1:" in text
    assert "HTTP Request:" not in text  # httpx's per-call INFO lines are quiet
    data_dir = Path(server["DATALAB_DATA_DIR"])
    for path in data_dir.rglob("*"):
        if path.is_file() and path.suffix in (".log", ".txt", ".json"):
            assert server["ADMIN_PASSWORD"] not in path.read_text(errors="ignore"), path


def test_cli_session(server: dict[str, str]) -> None:
    login = cli(
        server,
        "login",
        "--username",
        "admin",
        "--password-stdin",
        stdin=server["ADMIN_PASSWORD"] + "\n",
    )
    assert login.returncode == 0, login.stderr
    assert oct(Path(server["DATALAB_CREDENTIALS"]).stat().st_mode & 0o777) == "0o600"

    catalog = cli(server, "catalog", "list", "--output", "json")
    assert catalog.returncode == 0, catalog.stderr
    assert "jupyter-python" in {c["name"] for c in json.loads(catalog.stdout)[0]["charts"]}

    dry = cli(server, "launch", "jupyter-python", "--dry-run", "--name", "nb", "--output", "json")
    assert dry.returncode == 0, dry.stderr
    assert "helm upgrade --install nb" in json.loads(dry.stdout)["commands"]["helm"]

    bad = cli(server, "launch", "jupyter-python", "--dry-run", "--set", "no_such_key=1")
    assert bad.returncode == 1
    assert "no_such_key" in bad.stderr and "Traceback" not in bad.stderr

    users = cli(server, "users", "add", "alice")
    assert users.returncode == 0 and "password (shown once)" in users.stdout
    listing = cli(server, "users", "list", "--output", "json")
    assert {u["name"] for u in json.loads(listing.stdout)} == {"admin", "alice"}

    services = cli(server, "services", "--output", "json")
    assert services.returncode == 0 and json.loads(services.stdout)["services"] == []

    missing = cli(server, "services", "show", "nope")
    assert missing.returncode == 1 and "no such service" in missing.stderr

    shown = cli(server, "config", "show")
    assert shown.returncode == 0 and "server:" in shown.stdout


def test_cli_without_login_or_server_fails_clearly(server: dict[str, str], tmp_path: Path) -> None:
    anonymous = {**server, "DATALAB_CREDENTIALS": str(tmp_path / "none.json")}
    result = cli(anonymous, "services")
    assert result.returncode == 1 and "datalab login" in result.stderr
    nowhere = {**anonymous, "DATALAB_URL": f"http://127.0.0.1:{free_port()}"}
    result = cli(nowhere, "services")
    assert result.returncode == 1 and "cannot reach the platform" in result.stderr
    usage = cli(server, "launch")
    assert usage.returncode == 2


def test_launch_waits_then_logs_follow(server: dict[str, str]) -> None:
    login = cli(
        server,
        "login",
        "--username",
        "admin",
        "--password-stdin",
        stdin=server["ADMIN_PASSWORD"] + "\n",
    )
    assert login.returncode == 0, login.stderr
    launched = cli(server, "launch", "test/file-server", "--name", "web", "--set", "greeting=yo")
    assert launched.returncode == 0, launched.stderr
    assert "web: running" in launched.stdout
    assert "open: http://web.localhost:" in launched.stdout  # its own origin
    with subprocess.Popen(
        [*DATALAB, "logs", "-f", "--tail", "5", "web"],
        env=server,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as follower:
        try:
            time.sleep(1)
            token = json.loads(Path(server["DATALAB_CREDENTIALS"]).read_text())["token"]
            page = httpx.get(
                f"{server['DATALAB_URL']}/s/web/", headers={"Authorization": f"Bearer {token}"}
            )
            assert page.status_code == 200 and page.text == "yo"
            assert follower.stdout is not None
            # blocks until the server logs the request (the test's timeout bounds it)
            assert any('"GET / HTTP' in line for line in follower.stdout)
        finally:
            follower.kill()
    deleted = cli(server, "delete", "--yes", "web")
    assert deleted.returncode == 0, deleted.stderr
