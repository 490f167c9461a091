"""The web UI in a real browser (Debian's Chromium through Playwright), on the memory backend:
sign in, catalog, launcher with its live command bar and inline validation, my services,
account, admin, French, and one user not seeing another's services."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from ..conftest import ADMIN_PASSWORD
from .conftest import LiveServer, screenshot, sign_in

pytestmark = pytest.mark.slow


@pytest.fixture
def page(browser: Any, memory_server: LiveServer) -> Iterator[Any]:
    context = browser.new_context(
        viewport={"width": 1280, "height": 900}, locale="en-GB", base_url=memory_server.url
    )
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    # chart icons on the internet fail to load here (no network): only CSP violations and
    # script errors count
    page.on("console", lambda m: errors.append(m.text) if "Security Policy" in m.text else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    yield page
    context.close()
    assert errors == []


def test_launch_from_the_catalog_with_the_command_bar(page: Any, memory_server: LiveServer) -> None:
    memory_server.add_user("carol", "carol-password-1")
    page.goto("/services")
    assert "/login" in page.url  # pages need a session
    screenshot(page, "01-login")
    sign_in(page, memory_server, "carol", "carol-password-1")
    screenshot(page, "02-home")

    page.get_by_role("link", name="Catalog", exact=True).first.click()
    page.get_by_role("heading", name="jupyter-python").wait_for()
    cards = page.locator("#chart-cards > li:visible")
    everything = cards.count()
    page.get_by_label("Search charts").fill("jupyterlab")  # the JupyterLab charts only
    assert 1 <= cards.count() < everything
    page.get_by_label("Search charts").fill("jupyter-python")
    assert page.locator("#chart-cards > li:visible").count() == 1
    page.get_by_label("Search charts").fill("")
    screenshot(page, "03-catalog")

    page.get_by_role("link", name="Launch jupyter-python").click()
    page.get_by_role("heading", name="Launch jupyter-python").wait_for()
    bar = page.locator("#cmd-datalab")
    expect(page.locator("#cmd-helm")).to_contain_text("helm upgrade --install")
    assert "datalab launch datalab/jupyter-python" in bar.text_content()
    assert "password: '********'" in page.locator("#cmd-values").text_content()

    # the sections are WAI-ARIA tabs: arrow keys and End move between them
    first = page.get_by_role("tab").first
    first.focus()
    page.keyboard.press("ArrowRight")
    expect(page.get_by_role("tab").nth(1)).to_be_focused()
    expect(page.get_by_role("tab").nth(1)).to_have_attribute("aria-selected", "true")
    page.keyboard.press("End")
    expect(page.get_by_role("tab").last).to_have_attribute("aria-selected", "true")

    page.get_by_role("tab", name="resources").click()
    limit = page.locator("#f-resources-limits-cpu")
    limit.fill("1500m")
    expect(bar).to_contain_text("--set resources.limits.cpu=1500m")
    assert "cpu: 1500m" in page.locator("#cmd-values").text_content()
    # the slider follows the text field
    assert page.locator("#f-resources-limits-cpu-range").input_value() == "1500"
    # a request and its limit are one range: moving one past the other takes it along
    request = page.locator("#f-resources-requests-cpu")
    requested = request.input_value()
    request.fill("2000m")
    expect(limit).to_have_value("2000m")
    limit.fill("1000m")
    expect(request).to_have_value("1000m")
    request.fill(requested)
    limit.fill("1500m")
    expect(request).to_have_value(requested)

    # the API's validation, shown next to the field and on the section's tab
    limit.fill("lots")
    error = page.locator("#f-resources-limits-cpu-error")
    error.wait_for(state="visible")
    assert "does not match the pattern" in error.text_content()
    assert "has-error" in (page.get_by_role("tab", name="resources").get_attribute("class") or "")
    screenshot(page, "04-launcher-invalid")
    limit.fill("1500m")
    error.wait_for(state="hidden")

    # conditional fields: git identity hidden while git is disabled
    page.get_by_role("tab", name="git").click()
    assert page.locator("#f-git-name").is_visible()
    page.locator("#f-git-enabled").uncheck()
    assert not page.locator("#f-git-name").is_visible()
    page.locator("#f-git-enabled").check()

    # an array of objects is a group of inputs per item: add, fill, remove
    page.get_by_role("tab").first.click()
    env = page.locator("[data-path=extraEnvVars]")
    env.get_by_role("button", name="Add an item").click()
    env.locator(".item [data-key=name]").fill("GREETING")
    env.locator(".item [data-key=value]").fill("hello, world")
    expect(bar).to_contain_text("extraEnvVars")
    assert "GREETING" in page.locator("#cmd-values").text_content()
    env.get_by_role("button", name="Remove").click()
    expect(bar).not_to_contain_text("extraEnvVars")

    page.get_by_role("button", name="Copy auto-launch link").click()
    link = page.locator("#autolaunch-url").input_value()
    assert "resources.limits.cpu=1500m" in link and "autolaunch=true" in link
    assert "password" not in link
    screenshot(page, "05-launcher")

    page.get_by_role("button", name="Restore defaults").click()
    expect(bar).not_to_contain_text("--set")
    page.goto(link)  # the link opens the launcher pre-filled, and waits for the user
    assert page.locator("#f-resources-limits-cpu").input_value() == "1500m"
    page.get_by_role("alert").filter(has_text="pre-filled").wait_for()
    page.get_by_label("Service id (optional)").fill("nb-carol")
    page.get_by_role("button", name="Launch", exact=True).click()
    page.wait_for_url(re.compile(r"/services#svc-nb-carol$"))

    card = page.locator("#svc-nb-carol")
    card.get_by_text("Running").wait_for()
    card.get_by_text("Equivalent commands").click()
    card.get_by_text("datalab suspend nb-carol").wait_for()
    card.get_by_text("Events", exact=True).click()
    card.locator(".events table").wait_for()
    card.get_by_text("Logs", exact=True).click()
    expect(card.locator(".logs")).to_contain_text("memory backend")
    screenshot(page, "06-services")

    card.get_by_text("Name and sharing").click()
    card.get_by_label("Display name").fill("My <b>notebook</b>")
    card.get_by_role("button", name="Save").click()
    card.locator(".service-name", has_text="My <b>notebook</b>").wait_for()

    card.get_by_role("button", name="Suspend").click()
    card.get_by_text("Suspended").wait_for()
    card.get_by_role("button", name="Resume").click()
    card.get_by_text("Running").wait_for()
    page.once("dialog", lambda dialog: dialog.accept())
    card.get_by_role("button", name="Delete").click()
    card.wait_for(state="detached")
    assert (
        memory_server.api(
            "GET", "/api/services", token=memory_server.token("carol", "carol-password-1")
        )["services"]
        == []
    )


def test_account_and_admin_pages(page: Any, memory_server: LiveServer) -> None:
    sign_in(page, memory_server, "admin", ADMIN_PASSWORD)
    page.goto("/account")
    page.get_by_label("Git name").fill("Ada Admin")
    page.get_by_label("Git email").fill("not-an-email")
    page.locator("#profile-form").get_by_role("button", name="Save").click()
    page.locator("#profile-error").get_by_text("not an email address").wait_for()
    page.get_by_label("Git email").fill("ada@example.org")
    page.locator("#profile-form").get_by_role("button", name="Save").click()
    page.get_by_role("status").get_by_text("Saved.").wait_for()

    page.get_by_label("Name", exact=True).fill("laptop")
    page.get_by_role("button", name="Create a token").click()
    page.locator("#new-token").wait_for()
    token = page.locator("#new-token-value").input_value()
    assert token.startswith("dlb_")
    me = memory_server.api("GET", "/api/me", token=token)
    assert (me["git_name"], me["git_email"]) == ("Ada Admin", "ada@example.org")
    page.reload()
    assert token not in page.content()  # shown once
    screenshot(page, "07-account")

    page.goto("/admin")
    page.locator("#new-user").fill("dave")
    page.get_by_role("button", name="Create the user").click()
    page.locator("#admin-result").get_by_text("New password for dave").wait_for()
    page.locator("#new-project").fill("sandbox")
    # these actions reload the page: wait for the new one to be loaded (scripts attached)
    with page.expect_navigation():
        page.get_by_role("button", name="Create the project").click()
    row = page.locator("tr[data-project='project-sandbox']")
    row.get_by_label("User name").select_option("dave")
    with page.expect_navigation():
        row.get_by_role("button", name="Add").click()
    page.locator("tr[data-project='project-sandbox']").get_by_text("dave (member)").wait_for()
    screenshot(page, "08-admin")

    page.get_by_role("link", name="Audit log").click()
    page.get_by_label("User", exact=True).fill("admin")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url("**/admin/audit?user=admin**")
    page.get_by_role("cell", name="admin", exact=True).first.wait_for()
    assert "No entry matches." not in page.content()
    screenshot(page, "08-admin-audit")


def test_french(page: Any, memory_server: LiveServer) -> None:
    sign_in(page, memory_server, "admin", ADMIN_PASSWORD)
    page.get_by_label("Language").select_option("fr")
    page.wait_for_load_state()
    page.get_by_role("heading", name="Bienvenue, admin").wait_for()
    assert page.locator("html").get_attribute("lang") == "fr"
    for path, heading in [
        ("/catalog", "Catalogue"),
        ("/launcher/datalab/mlflow", "Lancer mlflow"),
        ("/services", "Mes services"),
        ("/account", "Compte"),
        ("/admin", "Administration"),
    ]:
        page.goto(path)
        page.get_by_role("heading", name=heading, exact=True).wait_for()
        if path.startswith("/launcher"):  # the defaults are valid: the command bar fills in
            expect(page.locator("#cmd-helm")).to_contain_text("helm upgrade --install")
            assert page.locator(".tablist .has-error").count() == 0
        assert "Sign out" not in page.content()
        screenshot(page, f"09-fr{path.replace('/', '-')}")
    # the API's error messages come in the page's language too
    page.goto("/account")
    page.locator("#email").fill("pas-une-adresse")
    page.locator("#profile-form button[type=submit]").click()
    expect(page.locator("#profile-error")).to_have_text(
        "email : 'pas-une-adresse' n'est pas une adresse électronique (nom@domaine)"
    )
    page.goto("/admin")
    page.get_by_label("Langue").select_option("en")
    page.get_by_role("heading", name="Administration").wait_for()
    assert "Sign out" in page.content()


def test_a_user_does_not_see_another_users_services(
    browser: Any, page: Any, memory_server: LiveServer
) -> None:
    memory_server.add_user("erin", "erin-password-1")
    memory_server.add_user("frank", "frank-password-1")
    erin = memory_server.token("erin", "erin-password-1")
    memory_server.api(
        "POST", "/api/services", token=erin, json={"chart": "mlflow", "name": "erin-tracking"}
    )
    sign_in(page, memory_server, "frank", "frank-password-1")
    page.goto("/services")
    page.get_by_text("No service yet in this project.").wait_for()
    assert "erin-tracking" not in page.content()
    page.goto("/ui/services/erin-tracking/status")
    assert "no longer exists" in page.content()
    response = page.request.get(memory_server.url + "/api/services/erin-tracking")
    assert response.status == 404
    screenshot(page, "10-other-user")


def test_pages_fit_a_phone_screen(page: Any, memory_server: LiveServer) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    sign_in(page, memory_server, "admin", ADMIN_PASSWORD)
    for path in ("/", "/catalog", "/launcher/datalab/jupyter-python", "/services", "/account"):
        page.goto(path)
        page.locator("main h1").wait_for()
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        wide = page.evaluate(
            "[...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right"
            " > window.innerWidth).map(e => e.tagName + '#' + e.id + '.' + e.className).slice(0, 5)"
        )
        assert overflow <= 0, (path, overflow, wide)
    screenshot(page, "18-phone-account")
    page.goto("/launcher/datalab/jupyter-python")
    screenshot(page, "18-phone-launcher")


def test_sharing_in_a_project(browser: Any, page: Any, memory_server: LiveServer) -> None:
    admin = memory_server.token("admin", ADMIN_PASSWORD)
    for name in ("mia", "noah"):
        memory_server.add_user(name, f"{name}-password-1")
    memory_server.api("POST", "/api/projects", token=admin, json={"name": "survey"})
    for name in ("mia", "noah"):
        memory_server.api(
            "POST", "/api/projects/project-survey/members", token=admin, json={"user": name}
        )
    sign_in(page, memory_server, "mia", "mia-password-1")
    page.get_by_label("Project").select_option("project-survey")
    page.get_by_text("Project: project-survey").wait_for()
    page.goto("/launcher/datalab/mlflow")
    page.get_by_label("Share with the project's members").check()
    page.get_by_label("Service id (optional)").fill("team-tracking")
    page.get_by_role("button", name="Launch", exact=True).click()
    page.locator("#svc-team-tracking").get_by_text("Shared").wait_for()

    other = browser.new_context(base_url=memory_server.url)
    noah = other.new_page()
    try:
        sign_in(noah, memory_server, "noah", "noah-password-1")
        noah.goto("/services")
        assert "team-tracking" not in noah.content()  # personal project: not there
        noah.get_by_label("Project").select_option("project-survey")
        card = noah.locator("#svc-team-tracking")
        card.get_by_text("by mia").wait_for()
        card.get_by_text("Running").wait_for()
        # a member uses it (open, password, logs) but only its owner or a project admin changes it
        assert card.get_by_role("button", name="Delete").count() == 0
        assert card.get_by_text("Name and sharing").count() == 0
        card.get_by_role("button", name="Copy password").wait_for()
        screenshot(noah, "20-shared-service")
    finally:
        other.close()
