"""Sign-in with an external OpenID Connect provider in a real browser: the sign-in page offers
"Sign in with <provider>", the provider (PyPI oidc-provider-mock, on loopback) authorizes, and
the user lands in the UI with their group projects in the project switcher."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from .conftest import LiveServer, screenshot, serve

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def oidc_server(provider: str) -> Iterator[LiveServer]:
    yield from serve(
        {
            "backend": {"name": "memory"},
            "branding": {"oidc_provider_name": "Example SSO"},
            "oidc": {
                "enabled": True,
                "issuer_url": provider,
                "client_id": "datalab",
                "client_secret": "any-secret",
                "group_include": ["stats-.*"],
            },
        }
    )


def test_sign_in_with_the_provider(browser: Any, provider: str, oidc_server: LiveServer) -> None:
    claims = {"preferred_username": "lea", "email": "lea@example.org", "groups": ["stats-naf"]}
    assert httpx.put(f"{provider}/users/lea-sub", json=claims).status_code == 204
    context = browser.new_context(base_url=oidc_server.url)
    context.set_default_timeout(20_000)
    page = context.new_page()
    try:
        page.goto("/services")
        page.get_by_role("link", name="Sign in with Example SSO").wait_for()
        screenshot(page, "19-login-oidc")
        page.get_by_role("link", name="Sign in with Example SSO").click()
        page.locator("input[name=sub]").fill("lea-sub")
        page.get_by_role("button", name="Authorize").click()
        page.wait_for_url(oidc_server.url + "/services")
        page.get_by_role("heading", name="My services").wait_for()
        assert "Sign out (lea)" in page.content()
        switcher = page.get_by_label("Project")
        assert "project-stats-naf" in switcher.inner_text()
        switcher.select_option("project-stats-naf")
        page.get_by_text("Project: project-stats-naf").wait_for()
    finally:
        context.close()
