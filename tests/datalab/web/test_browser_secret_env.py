"""Flow 3 in a real browser on the real local backend and the real embedded OpenBao: create a
secret, choose it for a launch ("Use in a launch"), launch a service, and see that the service
has the secret's keys as environment variables."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from .conftest import LiveServer, screenshot, serve, signed_in_page

pytestmark = pytest.mark.slow

CHARTS = Path(__file__).resolve().parents[2] / "fixtures" / "charts"
VALUE = "s3cr3t-from-vault"


@pytest.fixture(scope="module")
def secrets_server() -> Iterator[LiveServer]:
    yield from serve(
        {
            "backend": {"name": "local"},
            "secrets": {"mode": "embedded"},
            "catalogs": [{"id": "test", "name": "Test charts", "location": str(CHARTS)}],
        }
    )


def test_secret_becomes_an_environment_variable_of_a_service(
    browser: Any, secrets_server: LiveServer
) -> None:
    with signed_in_page(browser, secrets_server, "olga", "olga-password-1") as page:
        page.get_by_role("link", name="Secrets", exact=True).click()
        page.get_by_role("link", name="user-olga/").click()
        page.once("dialog", lambda dialog: dialog.accept("database"))
        page.get_by_role("button", name="New secret").click()
        page.get_by_label("Key 1").fill("DB_PASSWORD")
        page.get_by_label("Value 1").fill(VALUE)
        page.get_by_role("button", name="Save").click()
        page.get_by_role("button", name="database").click()
        page.get_by_role("link", name="Use in a launch").click()

        expect(page.locator("#with-secret")).to_contain_text("user-olga/database")
        screenshot(page, "21-secret-choose-service")
        page.get_by_role("link", name="Launch secret-echo").click()
        page.get_by_role("tab", name="Vault").click()
        expect(page.locator("#f-vault-enabled")).to_be_checked()  # as it will be at launch
        secret_field = page.locator("#f-vault-secret")
        expect(secret_field).to_have_value("user-olga/database")
        # the field suggests the user's secrets
        options = page.locator("#suggest-secrets option")
        expect(options).to_have_count(1)
        assert options.first.get_attribute("value") == "user-olga/database"
        expect(page.locator("#cmd-datalab")).to_contain_text("vault.secret=user-olga/database")
        assert VALUE not in page.content()
        screenshot(page, "22-secret-launcher")
        page.get_by_label("Service id (optional)").fill("echo")
        page.get_by_role("button", name="Launch", exact=True).click()

        card = page.locator("#svc-echo")
        open_link = card.get_by_role("link", name="Open")
        open_link.wait_for(timeout=120_000)
        assert VALUE not in page.content()
        with page.context.expect_page() as opened:
            open_link.click()
        service = opened.value
        service.wait_for_load_state()
        assert service.url == secrets_server.platform.settings.service_url("echo")
        expect(service.locator("body")).to_contain_text(f'"DB_PASSWORD": "{VALUE}"')
        screenshot(service, "23-secret-in-service-env")
        service.close()

        page.once("dialog", lambda dialog: dialog.accept())
        card.get_by_role("button", name="Delete").click()
        card.wait_for(state="detached")

        # the Account page gives a Vault token for tools outside the platform, on demand
        page.get_by_role("link", name="Account", exact=True).click()
        page.get_by_role("button", name="Show a Vault token").click()
        expect(page.locator("#vault-exports")).to_have_value(re.compile("export VAULT_TOKEN="))
        assert "export VAULT_TOP_DIR=user-olga" in page.locator("#vault-exports").input_value()
        screenshot(page, "24-account-vault-token")
