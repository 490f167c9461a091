"""Web pages in-process (httpx + ASGI): sign-in, sessions and CSRF, every page, escaping, no
secret in pages, languages, projects, the launcher's pre-filling, the status fragment."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
import yaml

from datalab.catalog import CatalogConfig
from datalab.web.i18n import LANGUAGES, catalog, negotiate
from datalab.web.security import CONTENT_SECURITY_POLICY

from ..conftest import ADMIN_PASSWORD, Env

pytestmark = pytest.mark.anyio

WEB = Path(__file__).resolve().parents[3] / "src" / "datalab" / "web"


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF field in the page"
    return match.group(1)


async def sign_in(http: httpx.AsyncClient, user: str, password: str) -> httpx.Response:
    form = await http.get("/login")
    return await http.post(
        "/login",
        data={"username": user, "password": password, "csrf_token": csrf_of(form.text)},
    )


@pytest.fixture
async def web(env: Env) -> httpx.AsyncClient:
    """A browser-like client signed in as the admin (cookies kept)."""
    http = httpx.AsyncClient(transport=env.http._transport, base_url="http://testserver")
    response = await sign_in(http, "admin", ADMIN_PASSWORD)
    assert response.status_code == 303 and response.headers["location"] == "/"
    return http


def test_languages_have_the_same_keys() -> None:
    keys = {lang: set(catalog(lang)) for lang in LANGUAGES}
    assert keys["en"] == keys["fr"]
    for lang in LANGUAGES:  # same placeholders in every translation
        for key, text in catalog(lang).items():
            assert set(re.findall(r"\{(\w+)\}", text)) == set(
                re.findall(r"\{(\w+)\}", catalog("en")[key])
            ), (lang, key)


def test_every_message_used_by_templates_and_pages_exists() -> None:
    sources = [*WEB.glob("templates/*.html"), *WEB.glob("routes/*.py"), WEB / "context.py"]
    used = set()
    for source in sources:
        used |= set(re.findall(r"\bt\([\"']([a-z_]+\.[a-z_.]+)[\"']\s*[,)]", source.read_text()))
    assert used and used - set(catalog("en")) == set()
    dynamic = {f"phase.{p}" for p in ("building", "starting", "running", "failed", "suspended")}
    assert dynamic <= set(catalog("en"))


def test_language_negotiation() -> None:
    assert negotiate("fr-FR,fr;q=0.9,en;q=0.8") == "fr"
    assert negotiate("de-DE,en;q=0.5,fr;q=0.7") == "fr"
    assert negotiate("de") == "en" and negotiate(None) == "en" and negotiate("fr;q=x") == "en"


def test_no_inline_script_in_templates() -> None:
    for template in WEB.glob("templates/*.html"):
        html = template.read_text()
        for tag in re.findall(r"<script[^>]*>", html):
            assert "src=" in tag, f"inline script in {template.name}: {tag}"
        assert not re.search(r"\son[a-z]+\s*=", html), f"inline handler in {template.name}"
        assert "style=" not in html, f"inline style in {template.name} (CSP forbids it)"


async def test_pages_need_a_session_and_send_security_headers(env: Env) -> None:
    login = await env.http.get("/login")
    assert login.status_code == 200
    assert login.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert login.headers["x-frame-options"] == "DENY"
    cookie = login.headers["set-cookie"]  # the sign-in form's CSRF token lives in the session
    assert "datalab_session=" in cookie and "httponly" in cookie.lower()
    assert "samesite=lax" in cookie.lower()
    for path in ("/", "/catalog", "/services", "/account", "/admin", "/launcher/datalab/mlflow"):
        response = await env.http.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/login?next=")


async def test_sign_in_errors_are_pages_not_tracebacks(env: Env) -> None:
    http = httpx.AsyncClient(transport=env.http._transport, base_url="http://testserver")
    wrong = await sign_in(http, "admin", "not-the-password")
    assert wrong.status_code == 401 and "Wrong user name or password" in wrong.text
    assert "Traceback" not in wrong.text
    # a form not from this site (no or another CSRF token) is refused
    forged = await http.post("/login", data={"username": "admin", "password": ADMIN_PASSWORD})
    assert forged.status_code == 403 and "did not come from this site" in forged.text
    empty = await http.post("/login", data={"csrf_token": csrf_of((await http.get("/login")).text)})
    assert empty.status_code == 422 and "Enter your user name" in empty.text
    # open redirects are not followed after signing in
    form = await http.get("/login?next=https://evil.example/")
    assert 'value="/"' in form.text
    ok = await http.post(
        "/login",
        data={
            "username": "admin",
            "password": ADMIN_PASSWORD,
            "csrf_token": csrf_of(form.text),
            "next": "//evil.example/",
        },
    )
    assert ok.status_code == 303 and ok.headers["location"] == "/"


async def test_every_page_renders_for_the_admin(web: httpx.AsyncClient) -> None:
    for path, text in [
        ("/", "Welcome, admin"),
        ("/catalog", "jupyter-python"),
        ("/launcher/datalab/jupyter-python", "Command bar"),
        ("/launcher/datalab/mlflow", "Launch mlflow"),
        ("/services", "Quota usage"),
        ("/account", "API tokens"),
        ("/admin", "Shared projects"),
        ("/catalog?q=tracking", "mlflow"),
    ]:
        response = await web.get(path)
        assert response.status_code == 200, (path, response.text[:500])
        assert text in response.text, path
    assert "jupyter-python" not in (await web.get("/catalog?q=tracking")).text
    theme = await web.get("/ui/theme.css")
    assert (
        theme.headers["content-type"].startswith("text/css") and "--primary: #1f4e79" in theme.text
    )


async def test_unknown_chart_and_non_admin_get_error_pages(
    env: Env, web: httpx.AsyncClient
) -> None:
    missing = await web.get("/launcher/datalab/nope")
    assert missing.status_code == 404 and "nope" in missing.text and "<h1>" in missing.text
    await env.user("olga")
    http = httpx.AsyncClient(transport=env.http._transport, base_url="http://testserver")
    await sign_in(http, "olga", "olga-password-123")
    admin = await http.get("/admin")
    assert admin.status_code == 403 and "administrator" in admin.text
    assert 'href="/admin"' not in (await http.get("/")).text


async def test_launcher_never_puts_a_secret_in_the_page(env: Env, web: httpx.AsyncClient) -> None:
    page = (await web.get("/launcher/datalab/jupyter-python")).text
    field = re.search(r'<input type="password" id="f-security-password"[^>]*>', page)
    assert field and 'value=""' in field.group(0)
    block = re.search(r'data-path="security.password"[^>]*data-default="([^"]*)"', page)
    assert block and block.group(1) == "null"
    # hidden fields are not in the form; read-only ones are shown disabled
    assert 'data-path="ingress.hostname"' not in page
    assert 'data-path="init.regionInit"' not in page  # hidden and read-only
    # the dry run used by the command bar masks secrets
    dry = await env.admin.call(
        "POST",
        "/api/services",
        json={"chart": "jupyter-python", "dry_run": True, "mask_secrets": True},
    )
    assert dry["values"]["security"]["password"] == "********"
    assert "password: '********'" in dry["commands"]["values_yaml"]
    plain = await env.admin.call(
        "POST", "/api/services", json={"chart": "jupyter-python", "dry_run": True}
    )
    assert plain["values"]["security"]["password"] != "********"


async def test_launcher_prefilled_from_an_auto_launch_link(web: httpx.AsyncClient) -> None:
    page = await web.get(
        "/launcher/datalab/jupyter-python?resources.limits.cpu=1500m&persistence.enabled=false"
        "&name=nb1&autolaunch=true&unknown.key=1"
    )
    assert page.status_code == 200
    assert re.search(
        r'id="f-resources-limits-cpu" name="resources.limits.cpu" value="1500m"', page.text
    )
    assert not re.search(r'id="f-persistence-enabled"[^>]*checked', page.text)
    assert 'id="service-name" name="name" value="nb1"' in page.text
    assert 'id="autolaunch-notice"' in page.text
    # invalid pre-filled values: shown as given, with the API's problems for the fields
    bad = await web.get("/launcher/datalab/jupyter-python?resources.limits.cpu=lots")
    problems = re.search(r"data-initial-problems='([^']*)'", bad.text)
    assert problems and "resources.limits.cpu" in problems.group(1)
    assert 'value="lots"' in bad.text


async def test_chart_text_and_names_are_escaped(env: Env, tmp_path: Path) -> None:
    chart = tmp_path / "charts" / "evil"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v2",
                "name": "evil",
                "version": "1.0.0",
                "description": "<script>alert('chart')</script>",
                "icon": "javascript:alert(1)",
            }
        )
    )
    (chart / "values.yaml").write_text("greeting: hi\n")
    (chart / "values.schema.json").write_text(
        '{"type": "object", "properties": {"greeting": {"type": "string", '
        '"title": "<img src=x onerror=alert(1)>", "default": "<b>hi</b>"}}}'
    )
    (chart / "templates" / "cm.yaml").write_text("kind: ConfigMap\n")
    broken = tmp_path / "charts" / "broken"
    broken.mkdir()
    (broken / "Chart.yaml").write_text("apiVersion: v2\nname: broken\nversion: 1.0.0\n")
    (broken / "values.yaml").write_text("key: [unclosed\n")
    env.platform.catalogs = type(env.platform.catalogs)(
        [
            *env.platform.settings.catalogs,
            CatalogConfig(id="evil", name="<i>Evil</i>", location=str(tmp_path / "charts")),
        ],
        cache_dir=tmp_path / "cache",
    )
    env.platform.services.catalogs = env.platform.catalogs
    await env.platform.catalogs.refresh()
    http = httpx.AsyncClient(transport=env.http._transport, base_url="http://testserver")
    await sign_in(http, "admin", ADMIN_PASSWORD)
    shipped = (await http.get("/catalog")).text  # catalogs as tabs, the first one shown
    assert 'href="/catalog?tab=evil"' in shipped and "jupyter-python" in shipped
    listing = (await http.get("/catalog?tab=evil")).text
    assert "1 chart(s) could not be loaded" in listing and "<code>broken</code>" in listing
    assert "<script>alert" not in listing and "&lt;script&gt;alert(&#39;chart&#39;)" in listing
    assert "<i>Evil</i>" not in listing
    launcher = (await http.get("/launcher/evil/evil")).text
    assert "<img src=x" not in launcher and "&lt;img src=x onerror=alert(1)&gt;" in launcher
    assert "<b>hi</b>" not in launcher
    await env.admin.call(
        "POST",
        "/api/services",
        json={
            "catalog": "evil",
            "chart": "evil",
            "name": "e1",
            "friendly_name": "<script>x()</script>",
        },
    )
    services = (await http.get("/services")).text
    assert "<script>x()" not in services and "&lt;script&gt;x()&lt;/script&gt;" in services


async def test_services_status_fragment(env: Env, web: httpx.AsyncClient) -> None:
    created = await env.admin.call("POST", "/api/services", json={"chart": "mlflow", "name": "ml"})
    fragment = await web.get("/ui/services/ml/status")
    assert fragment.status_code == 200 and "Running" in fragment.text
    assert "datalab suspend ml --project user-admin" in fragment.text  # the command bar too
    assert "helm uninstall ml -n user-admin" in fragment.text
    password = (await env.admin.call("GET", "/api/services/ml"))["password"]
    for path in ("/services", "/ui/services/ml/status", "/"):
        page = (await web.get(path)).text
        assert not password or password not in page, path
    assert "more than" not in fragment.text  # not running long yet
    env.platform.settings.branding.long_running_warning_h = 1e-9
    assert "suspend it when you do not use it" in (await web.get("/ui/services/ml/status")).text
    events = await web.get("/ui/services/ml/events")
    assert "<table" in events.text and "Started" in events.text
    assert created["id"] == "ml"
    # another user: the service does not exist for them; polling stops (286)
    await env.user("paul")
    http = httpx.AsyncClient(transport=env.http._transport, base_url="http://testserver")
    await sign_in(http, "paul", "paul-password-123")
    other = await http.get("/ui/services/ml/status")
    assert other.status_code == 286 and "no longer exists" in other.text
    assert "ml" not in re.findall(r'data-service="([^"]+)"', (await http.get("/services")).text)
    assert (await http.get("/ui/services/ml/events")).status_code == 404


async def test_language_switch_persists_for_the_user(env: Env, web: httpx.AsyncClient) -> None:
    home = await web.get("/")
    no_csrf = await web.post("/ui/lang", data={"lang": "fr"})
    assert no_csrf.status_code == 403
    switched = await web.post(
        "/ui/lang", data={"lang": "fr", "csrf_token": csrf_of(home.text), "next": "/catalog"}
    )
    assert switched.status_code == 303 and switched.headers["location"] == "/catalog"
    page = (await web.get("/catalog")).text
    assert '<html lang="fr" ' in page and "Catalogue" in page and "Mes services" in page
    assert (await env.admin.call("GET", "/api/me"))["lang"] == "fr"
    bad = await web.post("/ui/lang", data={"lang": "de", "csrf_token": csrf_of(home.text)})
    assert bad.status_code == 422
    # an anonymous visitor's browser language is used on the sign-in page
    anonymous = await env.http.get("/login", headers={"Accept-Language": "fr-FR,fr;q=0.9"})
    assert "Connexion" in anonymous.text


async def test_project_switcher(env: Env, web: httpx.AsyncClient) -> None:
    await env.admin.call("POST", "/api/projects", json={"name": "team"}, expect=201)
    await env.admin.call("POST", "/api/projects", json={"name": "other"}, expect=201)
    await env.admin.call("DELETE", "/api/projects/project-other/members/admin", expect=204)
    csrf = csrf_of((await web.get("/")).text)
    switched = await web.post(
        "/ui/project", data={"project": "project-team", "csrf_token": csrf, "next": "/services"}
    )
    assert switched.status_code == 303
    services = (await web.get("/services")).text
    assert "Project: project-team" in services
    assert '"X-Datalab-Project": "project-team"' in services.replace("&#34;", '"')
    # the launcher offers sharing in a shared project
    launcher = (await web.get("/launcher/datalab/mlflow")).text
    assert not re.search(r'id="shared" name="shared"[^>]*disabled', launcher)
    refused = await web.post("/ui/project", data={"project": "project-other", "csrf_token": csrf})
    assert refused.status_code == 403 and "not a member" in refused.text


async def test_profile_api(env: Env) -> None:
    me = await env.admin.call(
        "PATCH", "/api/me", json={"git_name": " Ada ", "git_email": "ada@example.org", "lang": "fr"}
    )
    assert (me["git_name"], me["git_email"], me["lang"]) == ("Ada", "ada@example.org", "fr")
    bad = await env.http.patch("/api/me", json={"git_email": "nope"}, headers=env.admin.headers())
    assert bad.status_code == 422 and "git_email" in bad.json()["error"]["message"]
    lang = await env.http.patch("/api/me", json={"lang": "de"}, headers=env.admin.headers())
    assert lang.status_code == 422
    cleared = await env.admin.call("PATCH", "/api/me", json={"git_name": ""})
    assert cleared["git_name"] is None and cleared["lang"] == "fr"


async def test_git_token_is_write_only_and_injected_into_launches(env: Env) -> None:
    token = "ghp_secretGitToken123"
    me = await env.admin.call("PATCH", "/api/me", json={"git_token": f" {token} "})
    assert me["git_token_set"] is True and token not in str(me)
    assert token not in str(await env.admin.call("GET", "/api/me"))
    launch = {"chart": "jupyter-python", "dry_run": True}
    dry = await env.admin.call("POST", "/api/services", json=launch)
    assert dry["values"]["git"]["token"] == token
    masked = await env.admin.call("POST", "/api/services", json=launch | {"mask_secrets": True})
    assert token not in str(masked)
    bad = await env.http.patch(
        "/api/me", json={"git_token": "two words"}, headers=env.admin.headers()
    )
    assert bad.status_code == 422 and "git_token" in bad.json()["error"]["message"]
    assert token not in bad.text
    cleared = await env.admin.call("PATCH", "/api/me", json={"git_token": ""})
    assert cleared["git_token_set"] is False
    dry = await env.admin.call("POST", "/api/services", json=launch)
    assert dry["values"]["git"]["token"] == ""


async def test_logout_needs_the_form_token(web: httpx.AsyncClient) -> None:
    assert (await web.post("/logout")).status_code == 403
    csrf = csrf_of((await web.get("/")).text)
    out = await web.post("/logout", data={"csrf_token": csrf})
    assert out.status_code == 303 and (await web.get("/")).status_code == 303


async def test_files_page_without_object_storage(web: httpx.AsyncClient) -> None:
    page = await web.get("/files")
    assert page.status_code == 200 and "Object storage is not enabled" in page.text


async def test_sizes_in_both_languages(env: Env) -> None:
    from starlette.requests import Request

    from datalab.web.context import Page

    request = Request({"type": "http"})  # sizes need no request: an empty one
    page = Page(request=request, platform=env.platform, lang="fr", csrf="")
    assert [page.size(n) for n in (8, 1536, 5 * 1024**3)] == ["8 o", "1,5 Kio", "5,0 Gio"]
    page.lang = "en"
    assert page.size(1536) == "1.5 KiB" and page.size(None) == ""


async def test_audit_log_page(env: Env, web: httpx.AsyncClient) -> None:
    await env.admin.call("POST", "/api/services", json={"chart": "mlflow", "name": "audited"})
    page = await web.get("/admin/audit")
    assert page.status_code == 200 and "Audit log" in page.text
    assert "services.launch" in page.text
    filtered = await web.get("/admin/audit?action=services&outcome=success&since=2020-01-01")
    assert filtered.status_code == 200 and "services.launch" in filtered.text
    assert 'href="/api/audit/export?action=services&amp;outcome=success' in filtered.text
    nothing = await web.get("/admin/audit?user=nobody")
    assert "No entry matches." in nothing.text
    bad = await web.get("/admin/audit?since=yesterday")
    assert bad.status_code == 422 and "is not a date" in bad.text
    await env.user("quinn")
    http = httpx.AsyncClient(transport=env.http._transport, base_url="http://testserver")
    await sign_in(http, "quinn", "quinn-password-123")
    assert (await http.get("/admin/audit")).status_code == 403


async def test_launch_preview_is_a_read_with_secrets_masked(env: Env) -> None:
    values = '{"resources": {"limits": {"cpu": "1500m"}}}'
    preview = await env.admin.call(
        "GET", "/api/launch-preview", params={"chart": "jupyter-python", "values": values}
    )
    assert preview["dry_run"] is True
    assert "--set resources.limits.cpu=1500m" in preview["commands"]["datalab"]
    assert preview["values"]["security"]["password"] == "********"
    bad = await env.http.get(
        "/api/launch-preview",
        params={"chart": "jupyter-python", "values": "{nope"},
        headers=env.admin.headers(),
    )
    assert bad.status_code == 422 and "JSON" in bad.json()["error"]["message"]
    invalid = await env.http.get(
        "/api/launch-preview",
        params={"chart": "jupyter-python", "values": '{"resources": {"limits": {"cpu": "x"}}}'},
        headers=env.admin.headers(),
    )
    assert invalid.status_code == 422
    assert invalid.json()["error"]["details"][0]["path"] == "resources.limits.cpu"
    audited = await env.admin.call("GET", "/api/audit")
    assert not [e for e in audited["entries"] if "preview" in e["path"]]


async def test_fragments_send_htmx_to_sign_in(env: Env) -> None:
    response = await env.http.get("/ui/services/x/status", headers={"HX-Request": "true"})
    assert response.status_code == 401
    assert response.headers["hx-redirect"].startswith("/login?next=")


class _Controls(HTMLParser):
    """Form controls of a page and the ids that labels point at."""

    def __init__(self) -> None:
        super().__init__()
        self.controls: list[dict[str, str | None]] = []
        self.labelled: set[str] = set()
        self.images: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "label" and attributes.get("for"):
            self.labelled.add(str(attributes["for"]))
        if tag in ("input", "select", "textarea") and attributes.get("type") != "hidden":
            self.controls.append(attributes)
        if tag == "img":
            self.images.append(attributes)


async def test_every_control_has_a_label(env: Env, web: httpx.AsyncClient) -> None:
    await env.admin.call("POST", "/api/services", json={"chart": "mlflow", "name": "labelled"})
    for path in (
        "/",
        "/catalog",
        "/launcher/datalab/jupyter-python",
        "/launcher/datalab/mlflow",
        "/services",
        "/account",
        "/admin",
        "/admin/audit",
        "/login",
    ):
        parser = _Controls()
        client = env.http if path == "/login" else web  # signed-in users skip the sign-in page
        parser.feed((await client.get(path)).text)
        assert parser.controls, path
        for control in parser.controls:
            named = control.get("aria-label") or control.get("id") in parser.labelled
            assert named, (path, control)
        for image in parser.images:
            assert image.get("alt") is not None, (path, image)


async def test_quota_fragment_follows_launches(env: Env, web: httpx.AsyncClient) -> None:
    before = (await web.get("/ui/quota")).text
    assert 'id="gauge-services" min="0" max="10" value="0"' in before
    await env.admin.call("POST", "/api/services", json={"chart": "mlflow", "name": "counted"})
    after = (await web.get("/ui/quota")).text
    assert 'id="gauge-services" min="0" max="10" value="1"' in after
