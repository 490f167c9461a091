"""The shipped catalog's services launched from the UI in Chromium on the real local backend, with
the real embedded object storage, and used as a statistician uses them: R and PySpark notebooks
that read the user's S3, the VS Code workbench on the service's folder, the command lines the
PostgreSQL and Redis cards print, run as printed, Label Studio's own sign-in (its projects are
used by autocode's annotation tests). One screenshot per service running and one of it in use
(test-artifacts/screenshots/2x-*.png, 30-*.png).

The services' environments are shared with the API tests (``SEED_ENVS``), which build them
first in a full run: here a warm launch takes seconds."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from ..conftest import use_seed_envs
from .conftest import LiveServer, screenshot, serve, signed_in_page

pytestmark = pytest.mark.slow

USER, PASSWORD = "sam", "sam-password-123"
CSV = b"city,population\nLyon,522\nNantes,320\nLille,236\n"


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    for live in serve({"backend": {"name": "local"}, "storage": {"mode": "embedded"}}):
        use_seed_envs(live.platform)
        yield live


@pytest.fixture(scope="module")
def page(browser: Any, server: LiveServer) -> Iterator[Any]:
    """sam, signed in for the whole module, with a CSV in their bucket."""
    with signed_in_page(
        browser, server, USER, PASSWORD, permissions=["clipboard-read", "clipboard-write"]
    ) as page:
        token = server.token(USER, PASSWORD)
        server.api(
            "PUT", f"/api/storage/buckets/user-{USER}/objects/data/cities.csv", token=token,
            content=CSV,
        )  # fmt: skip
        yield page


def launch(page: Any, chart: str, name: str, timeout_s: float) -> Any:
    """Catalog → the chart's launcher → Launch; the service's card once running."""
    page.get_by_role("link", name="Catalog", exact=True).first.click()
    page.get_by_role("link", name=f"Launch {chart}", exact=True).click()
    page.get_by_label("Service id (optional)").fill(name)
    page.get_by_role("button", name="Launch", exact=True).click()
    card = page.locator(f"#svc-{name}")
    card.locator(".phase-running").wait_for(timeout=timeout_s * 1000)
    return card


def copied_password(page: Any, card: Any) -> str:
    """The service password, as the user gets it: the card's Copy password button."""
    card.get_by_role("button", name="Copy password").click()
    page.get_by_role("status").get_by_text("Copied").first.wait_for()
    password: str = page.evaluate("navigator.clipboard.readText()")
    assert password and password not in page.content()  # copied, never shown
    return password


def notes(card: Any) -> str:
    card.locator("details.notes summary").click()
    text: str = card.locator("details.notes pre").inner_text()
    return text


def open_service(page: Any, card: Any, server: LiveServer, name: str) -> Any:
    """The service's page, opened from its card: at its own origin, through the gateway."""
    with page.context.expect_page() as opened:
        card.get_by_role("link", name="Open").click()
    service = opened.value
    service.wait_for_load_state()
    assert service.url.startswith(server.platform.settings.service_url(name))
    return service


def delete(page: Any, card: Any) -> None:
    page.once("dialog", lambda dialog: dialog.accept())
    card.get_by_role("button", name="Delete").click()
    card.wait_for(state="detached")


def run_cell(lab: Any, kernel: str, code: str, expected: str | re.Pattern[str]) -> None:
    """A new notebook of ``kernel`` in JupyterLab, one cell run; its output shows ``expected``."""
    lab.locator(f".jp-LauncherCard[data-category='Notebook'][title='{kernel}']").click(
        timeout=90_000
    )
    lab.get_by_text(re.compile(r"\| Idle$")).first.wait_for(timeout=120_000)
    cell = lab.locator(".jp-Notebook .jp-Cell .cm-content").first
    cell.click()
    cell.type(code)
    lab.keyboard.press("Shift+Enter")
    output = lab.locator(".jp-OutputArea-output").filter(has_text=expected)
    expect(output.first).to_be_visible(timeout=180_000)


def jupyter(page: Any, card: Any, server: LiveServer, name: str) -> Any:
    password = copied_password(page, card)
    lab = open_service(page, card, server, name)
    lab.locator("#password_input").fill(password)  # Jupyter's own second lock
    lab.locator("#password_input").press("Enter")
    return lab


@pytest.mark.timeout(900)
def test_r_notebook_reads_the_users_s3(page: Any, server: LiveServer) -> None:
    card = launch(page, "jupyter-r", "r-lab", timeout_s=600)
    screenshot(page, "21-jupyter-r-running")
    lab = jupyter(page, card, server, "r-lab")
    code = (
        'cities <- s3_read_csv(paste0("s3://", Sys.getenv("S3_WORKING_DIRECTORY"), '
        '"data/cities.csv")); cat("total", sum(cities$population))'
    )
    run_cell(lab, "R", code, "total 1078")
    screenshot(lab, "22-jupyter-r-notebook")
    lab.close()
    delete(page, card)


@pytest.mark.timeout(900)
def test_pyspark_notebook_reads_the_users_s3(page: Any, server: LiveServer) -> None:
    card = launch(page, "jupyter-pyspark", "spark-lab", timeout_s=600)
    screenshot(page, "23-jupyter-pyspark-running")
    lab = jupyter(page, card, server, "spark-lab")
    code = (
        "import os; from pyspark.sql import SparkSession; "
        "spark = SparkSession.builder.getOrCreate(); "
        "df = spark.read.option('header', True).csv("
        "'s3a://' + os.environ['S3_WORKING_DIRECTORY'] + 'data/cities.csv'); "
        "print('rows', df.count())"
    )
    run_cell(lab, "Python 3 (ipykernel)", code, "rows 3")
    screenshot(lab, "24-jupyter-pyspark-notebook")
    lab.close()
    delete(page, card)


@pytest.mark.timeout(2400)  # a cold build compiles code-server's native modules
def test_vscode_workbench_on_the_service_folder(page: Any, server: LiveServer) -> None:
    card = launch(page, "vscode", "code", timeout_s=1800)
    screenshot(page, "25-vscode-running")
    workdir = server.platform.settings.data_dir / "services" / "code" / "work"
    (workdir / "analysis.py").write_text("print('hello')\n")
    os.chmod(workdir / "analysis.py", 0o644)
    password = copied_password(page, card)
    workbench = open_service(page, card, server, "code")
    workbench.locator("input[name=password]").fill(password)  # code-server's own lock
    workbench.locator("input[name=password]").press("Enter")
    workbench.locator(".monaco-workbench").wait_for(timeout=120_000)
    # the trust prompt of a new folder, when code-server asks it
    trust = workbench.get_by_role("button", name=re.compile("Yes, I trust the authors"))
    if trust.count():
        trust.click()
    explorer = workbench.locator(".explorer-folders-view")
    explorer.get_by_text("analysis.py").click(timeout=60_000)
    editor = workbench.locator(".monaco-editor .view-lines")
    expect(editor.first).to_contain_text("print('hello')")  # the file, opened in the editor
    screenshot(workbench, "26-vscode-workbench")
    workbench.close()
    delete(page, card)


def run_printed(
    command: str, password: str, *args: str, env_name: str
) -> subprocess.CompletedProcess[str]:
    """A command line as a card's notes print it, run as printed, with the password."""
    argv = shlex.split(command) + list(args)
    environment = {"PATH": os.environ["PATH"], env_name: password}
    return subprocess.run(argv, env=environment, capture_output=True, text=True, timeout=60)


def test_postgresql_with_the_printed_command(page: Any, server: LiveServer) -> None:
    card = launch(page, "postgresql", "db", timeout_s=300)
    text = notes(card)
    screenshot(page, "27-postgresql-running")
    psql = re.search(r"`(psql [^`]+)`", text)
    assert psql, text
    password = copied_password(page, card)
    sql = (
        "CREATE TABLE t (x int); INSERT INTO t VALUES (6), (7); SELECT current_user, sum(x) FROM t"
    )
    done = run_printed(psql.group(1), password, "-AtF,", "-c", sql, env_name="PGPASSWORD")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == f"{USER},13"
    refused = run_printed(psql.group(1), "wrong", "-c", "SELECT 1", env_name="PGPASSWORD")
    assert refused.returncode != 0 and "password authentication failed" in refused.stderr
    delete(page, card)


def test_redis_with_the_printed_command(page: Any, server: LiveServer) -> None:
    card = launch(page, "redis", "cache", timeout_s=120)
    text = notes(card)
    screenshot(page, "28-redis-running")
    found = re.search(r"`REDISCLI_AUTH=<service password> (redis-cli [^`]+)`", text)
    assert found, text
    password = copied_password(page, card)
    redis_cli = found.group(1)
    written = run_printed(redis_cli, password, "SET", "k", "hello", env_name="REDISCLI_AUTH")
    assert written.stdout == "OK\n", written.stderr
    read = run_printed(redis_cli, password, "GET", "k", env_name="REDISCLI_AUTH")
    assert read.stdout == "hello\n", read.stderr
    refused = run_printed(redis_cli, "wrong", "GET", "k", env_name="REDISCLI_AUTH")
    assert "hello" not in refused.stdout
    assert "WRONGPASS" in refused.stdout + refused.stderr, refused
    delete(page, card)


@pytest.mark.timeout(1500)  # a cold start: the environment, then Label Studio's migrations
def test_label_studio_sign_in(page: Any, server: LiveServer) -> None:
    card = launch(page, "label-studio", "ls", timeout_s=1200)
    screenshot(page, "29-label-studio-running")
    password = copied_password(page, card)
    studio = open_service(page, card, server, "ls")
    try:
        studio.locator("input[name=email]").fill(f"{USER}@localhost")
        studio.locator("input[name=password]").fill(password)
        studio.locator("input[name=password]").press("Enter")
        # signed in: its home page offers to create a project
        studio.get_by_role("button", name="Create Project").first.wait_for(timeout=60_000)
        assert "/user/login" not in studio.url
    except Exception:
        screenshot(studio, "FAILED-label-studio-sign-in")
        raise
    screenshot(studio, "30-label-studio-home")
    studio.close()
    delete(page, card)
