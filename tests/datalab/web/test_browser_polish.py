"""The UI polish of issue 20 in Chromium: no request leaves loopback on the catalog, dark mode,
the copy-URL button, service cards that do not stretch their neighbours."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from datalab.catalog import SHIPPED_CATALOG_DIR, load_catalog_file

from .conftest import LiveServer, screenshot, serve, signed_in_page

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    """The shipped catalog and one whose chart names an icon on the internet, on the memory
    backend."""
    with tempfile.TemporaryDirectory(prefix="datalab-polish-") as root:
        chart = Path(root) / "charts" / "remote-icon"
        (chart / "templates").mkdir(parents=True)
        (chart / "Chart.yaml").write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v2",
                    "name": "remote-icon",
                    "version": "1.0.0",
                    "description": "A chart whose icon is on the internet",
                    "icon": "https://icons.example.org/remote-icon.png",
                }
            )
        )
        (chart / "templates" / "cm.yaml").write_text("kind: ConfigMap\n")
        catalogs = [
            *(c.model_dump() for c in load_catalog_file(SHIPPED_CATALOG_DIR / "catalog.yaml")),
            {"id": "outside", "location": str(chart.parent)},
        ]
        yield from serve({"backend": {"name": "memory"}, "catalogs": catalogs})


def off_loopback(requests: list[str]) -> list[str]:
    return [
        url
        for url in requests
        if urlparse(url).scheme not in ("data", "blob")
        and urlparse(url).hostname not in ("127.0.0.1", "localhost")
    ]


def test_catalog_requests_stay_on_loopback(browser: Any, server: LiveServer) -> None:
    with signed_in_page(browser, server, "iris", "iris-password-1") as page:
        requests: list[str] = []
        page.on("request", lambda request: requests.append(request.url))
        for tab in ("datalab", "outside"):
            page.goto(f"/catalog?tab={tab}")
            page.wait_for_load_state("networkidle")
            page.locator(".chart-card").first.wait_for()
            # every card has its icon: an image served by the platform, or initials
            for card in page.locator(".chart-card").all():
                icon = card.locator(".chart-icon")
                assert icon.count() == 1
                if icon.evaluate("e => e.tagName") == "IMG":
                    assert icon.evaluate("e => e.complete && e.naturalWidth > 0")
            screenshot(page, f"polish-catalog-{tab}")
        page.goto("/launcher/datalab/jupyter-python")
        page.wait_for_load_state("networkidle")
        assert page.locator(".launcher-head img.chart-icon").evaluate("e => e.naturalWidth > 0")
        assert any("/ui/chart-icons/datalab/jupyter-python/" in url for url in requests)
        assert page.locator(".chart-icon.initial").count() == 0
        page.goto("/catalog?tab=outside")
        assert page.locator(".chart-icon.initial").first.text_content() == "RI"
        assert off_loopback(requests) == []


LIGHT_BG, DARK_BG = "rgb(246, 247, 249)", "rgb(17, 20, 24)"


def background(page: Any) -> str:
    return str(page.evaluate("getComputedStyle(document.documentElement).backgroundColor"))


def test_dark_mode_follows_the_system_and_the_account(browser: Any, server: LiveServer) -> None:
    with signed_in_page(browser, server, "dora", "dora-password-1") as page:
        page.emulate_media(color_scheme="dark")
        page.goto("/account")
        assert page.locator("html").get_attribute("data-theme") == "system"
        assert background(page) == DARK_BG
        # the browser's scheme reaches the account: services get user.darkMode = true
        api_token = server.token("dora", "dora-password-1")
        page.wait_for_function("document.documentElement.dataset.systemDark === 'true'")
        page.wait_for_timeout(200)
        assert server.api("GET", "/api/me", token=api_token)["system_dark"] is True
        screenshot(page, "polish-account-dark")
        page.emulate_media(color_scheme="light")
        assert background(page) == LIGHT_BG  # follows the system live

        page.get_by_label("Dark", exact=True).check()
        page.get_by_role("status").get_by_text("Saved.").wait_for()
        assert background(page) == DARK_BG
        page.reload()
        assert page.locator("html").get_attribute("data-theme") == "dark"
        assert background(page) == DARK_BG
        page.goto("/catalog")  # every page, not only the account's
        assert background(page) == DARK_BG
        screenshot(page, "polish-catalog-dark")
        assert server.api("GET", "/api/me", token=api_token)["theme"] == "dark"

        page.goto("/account")
        page.emulate_media(color_scheme="dark")
        page.get_by_label("Light", exact=True).check()
        page.get_by_role("status").get_by_text("Saved.").wait_for()
        assert background(page) == LIGHT_BG  # light wins over a dark system
        page.reload()
        assert background(page) == LIGHT_BG


def test_copy_a_services_url(browser: Any, server: LiveServer) -> None:
    permissions = ["clipboard-read", "clipboard-write"]
    with signed_in_page(
        browser, server, "cleo", "cleo-password-1", permissions=permissions
    ) as page:
        token = server.token("cleo", "cleo-password-1")
        body = {"catalog": "datalab", "chart": "jupyter-python", "name": "nb-cleo"}
        server.api("POST", "/api/services", token=token, json=body)
        url = server.platform.settings.service_url("nb-cleo")
        assert url.startswith("http://nb-cleo.")

        page.goto("/services")
        card = page.locator("#svc-nb-cleo")
        button = card.get_by_role("button", name="Copy the URL of jupyter-python")
        button.click()
        page.get_by_role("status").get_by_text("URL copied.").wait_for()
        assert page.evaluate("navigator.clipboard.readText()") == url
        assert card.get_by_role("link", name="Open").get_attribute("href") == url
        screenshot(page, "polish-services-copy-url")

        page.evaluate("navigator.clipboard.writeText('')")
        page.goto("/")  # the home page's latest services
        page.get_by_role("button", name="Copy the URL of jupyter-python").click()
        page.get_by_role("status").get_by_text("URL copied.").wait_for()
        assert page.evaluate("navigator.clipboard.readText()") == url
        server.api("DELETE", "/api/services/nb-cleo", token=token)


def box(locator: Any) -> dict[str, float]:
    """The element's box in page coordinates (clicks scroll the page)."""
    found: dict[str, float] = locator.evaluate(
        "e => { const r = e.getBoundingClientRect();"
        " return {x: r.x + scrollX, y: r.y + scrollY, width: r.width, height: r.height}; }"
    )
    return {k: round(v) for k, v in found.items()}


def test_opening_a_service_card_does_not_stretch_its_neighbours(
    browser: Any, server: LiveServer
) -> None:
    with signed_in_page(browser, server, "nina", "nina-password-1") as page:
        token = server.token("nina", "nina-password-1")
        for name in ("left", "right"):
            body = {"catalog": "datalab", "chart": "mlflow", "name": name}
            server.api("POST", "/api/services", token=token, json=body)
        page.set_viewport_size({"width": 1280, "height": 900})  # two cards a row
        page.goto("/services")
        left, right = page.locator("#svc-left"), page.locator("#svc-right")
        for card in (left, right):
            card.get_by_text("Running").wait_for()
            card.locator(".copy-url").wait_for()
        page.wait_for_timeout(300)  # the status fragments settled
        before_left, before_right = box(left), box(right)
        assert before_left["y"] == before_right["y"]  # one row

        left.get_by_text("Equivalent commands").click()
        left.get_by_text("Events", exact=True).click()
        left.locator(".events table").wait_for()
        after_left, after_right = box(left), box(right)
        assert after_left["height"] > before_left["height"] + 100  # it grew
        assert after_right == before_right  # its neighbour did not
        screenshot(page, "polish-services-expanded")
        for name in ("left", "right"):
            server.api("DELETE", f"/api/services/{name}", token=token)
