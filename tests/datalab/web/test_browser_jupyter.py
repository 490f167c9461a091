"""Flow 1 in a real browser on the real local backend: sign in, pick JupyterLab in the catalog,
change its CPU limit in the launcher, launch, open it through the platform's proxy with the
password copied from My services, and run ``print(6*7)`` in a notebook."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from ..conftest import use_seed_envs
from .conftest import LiveServer, screenshot, serve, signed_in_page

pytestmark = pytest.mark.slow

#: a cold environment build (JupyterLab, pandas, pyarrow, polars, duckdb...) from the uv cache,
#: on a loaded 2-core machine (kept in SEED_ENVS afterwards: a warm run only starts it)
BUILD_TIMEOUT_MS = 600_000


@pytest.fixture(scope="module")
def local_server() -> Iterator[LiveServer]:
    for live in serve({"backend": {"name": "local"}}):
        use_seed_envs(live.platform)
        yield live


@pytest.mark.timeout(900)
def test_jupyterlab_from_the_catalog_runs_a_notebook(
    browser: Any, local_server: LiveServer
) -> None:
    with signed_in_page(
        browser,
        local_server,
        "nora",
        "nora-password-1",
        permissions=["clipboard-read", "clipboard-write"],
    ) as page:
        page.get_by_role("link", name="Catalog", exact=True).first.click()
        page.get_by_role("link", name="Launch jupyter-python").click()
        page.get_by_role("tab", name="Resources").click()
        page.locator("#f-resources-limits-cpu").fill("1500m")
        expect(page.locator("#cmd-datalab")).to_contain_text("resources.limits.cpu=1500m")
        page.get_by_label("Service id (optional)").fill("nb")
        page.get_by_role("button", name="Launch", exact=True).click()

        card = page.locator("#svc-nb")
        card.get_by_text("Building environment").or_(card.get_by_text("Starting")).or_(
            card.get_by_text("Running")
        ).first.wait_for()
        screenshot(page, "11-jupyter-building")
        open_link = card.get_by_role("link", name="Open")
        open_link.wait_for(timeout=BUILD_TIMEOUT_MS)
        expect(card).to_contain_text("1500m at most")
        screenshot(page, "12-jupyter-running")

        card.get_by_role("button", name="Copy password").click()
        page.get_by_role("status").get_by_text("Copied").wait_for()
        password = page.evaluate("navigator.clipboard.readText()")
        assert password and password not in page.content()  # copied, never shown

        with page.context.expect_page() as opened:
            open_link.click()
        lab = opened.value
        lab.wait_for_load_state()
        # at its own origin, through the platform's gateway (signed in by the handshake)
        assert lab.url.startswith(local_server.platform.settings.service_url("nb"))
        lab.locator("#password_input").fill(password)  # Jupyter's own second lock
        lab.locator("#password_input").press("Enter")
        try:
            lab.locator(".jp-LauncherCard[data-category='Notebook']").first.click(timeout=90_000)
            # the kernel must be up before the cell runs (the status bar says Idle)
            lab.get_by_text(re.compile(r"\| Idle$")).first.wait_for(timeout=90_000)
            cell = lab.locator(".jp-Notebook .jp-Cell .cm-content").first
            cell.click()
            cell.type("print(6*7)")
            expect(cell).to_have_text("print(6*7)")
            lab.keyboard.press("Shift+Enter")
            output = lab.locator(".jp-OutputArea-output").first
            expect(output).to_have_text("42", timeout=60_000)
            screenshot(lab, "13-jupyter-notebook")
        except Exception:
            screenshot(lab, "FAILED-jupyter-notebook")
            raise
        lab.close()

        page.once("dialog", lambda dialog: dialog.accept())
        card.get_by_role("button", name="Delete").click()
        card.wait_for(state="detached")
