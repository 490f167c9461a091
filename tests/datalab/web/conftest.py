"""Web UI fixtures: a platform served by a real uvicorn in a thread, and Debian's Chromium driven
by Playwright (never a downloaded browser). Screenshots go to test-artifacts/screenshots/."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from datalab.app import create_app
from datalab.config import load_settings
from datalab.platform import Platform
from datalab.processes import free_port

from ..conftest import ADMIN_PASSWORD

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[3] / "test-artifacts" / "screenshots"


@dataclass
class LiveServer:
    url: str
    platform: Platform

    def api(self, method: str, path: str, *, token: str | None = None, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = httpx.request(method, self.url + path, headers=headers, timeout=30, **kw)
        assert response.status_code < 300, response.text
        return response.json() if response.content else None

    def token(self, user: str, password: str) -> str:
        body = {"username": user, "password": password, "token_name": "tests", "ttl_days": 1}
        token: str = self.api("POST", "/api/auth/token", json=body)["token"]
        return token

    def add_user(self, name: str, password: str) -> None:
        admin = self.token("admin", ADMIN_PASSWORD)
        self.api("POST", "/api/users", token=admin, json={"name": name, "password": password})


def serve(settings_overrides: dict[str, Any]) -> Iterator[LiveServer]:
    """A platform on a free port, served by uvicorn in a thread (stopped on exit). The data
    directory is outside pytest's 0700 tmp dir: with the local backend running as root, services
    run under per-user accounts that must be able to enter it."""
    root = Path(tempfile.mkdtemp(prefix="datalab-web-"))
    os.chmod(root, 0o711)
    port = free_port()
    overrides = {"storage": {"mode": "disabled"}, "secrets": {"mode": "disabled"}}
    settings = load_settings(
        None, data_dir=root / "data", server={"port": port}, **(overrides | settings_overrides)
    )
    platform = Platform.create(settings)
    with pytest.MonkeyPatch.context() as patch:  # not left behind for other tests
        patch.setenv("DATALAB_ADMIN_PASSWORD", ADMIN_PASSWORD)
        platform.ensure_admin()
    config = uvicorn.Config(
        create_app(platform),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        ws="websockets-sansio",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="datalab-web-tests", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", platform)
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def memory_server() -> Iterator[LiveServer]:
    """The shipped catalog on the memory backend (nothing runs): fast UI flows."""
    yield from serve({"backend": {"name": "memory"}})


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One Chromium per module: Playwright's sync API runs an event loop in this thread while it
    is open, and the anyio tests of other modules need the thread's loop free."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (make test does it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def screenshot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def sign_in(page: Any, server: LiveServer, user: str, password: str) -> None:
    page.goto(server.url + "/login")
    page.get_by_label("User name").or_(page.get_by_label("Nom d'utilisateur")).fill(user)
    page.locator("#password").fill(password)
    page.locator("form[action='/login'] button[type=submit]").click()
    page.wait_for_url(server.url + "/")


@contextlib.contextmanager
def signed_in_page(
    browser: Any, server: LiveServer, user: str, password: str, *, permissions: Sequence[str] = ()
) -> Iterator[Any]:
    """A page of a new browser context (1280×900, 30 s timeouts) where ``user``, created with
    ``password``, is signed in; the context closes afterwards."""
    server.add_user(user, password)
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=server.url)
    if permissions:
        context.grant_permissions(list(permissions), origin=server.url)
    context.set_default_timeout(30_000)
    page = context.new_page()
    try:
        sign_in(page, server, user, password)
        yield page
    finally:
        context.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep a screenshot of the page when a browser test fails (test-artifacts/screenshots)."""
    report = yield
    page = getattr(item, "funcargs", {}).get("page")
    if report.when == "call" and report.failed and page is not None:
        # the page may be gone; the failure itself matters more
        with contextlib.suppress(Exception):
            screenshot(page, f"FAILED-{item.name}")
    return report
