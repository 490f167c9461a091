"""The UI polish of issue 20, in-process: chart icons served by the platform (no external image
URL in the pages), launcher tab names, dark mode, chart translations."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
import yaml

from datalab.catalog import CatalogConfig
from datalab.web.forms import humanise

from ..conftest import ADMIN_PASSWORD, Env
from .test_pages import sign_in

pytestmark = pytest.mark.anyio

SVG = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 1 1"/>\n'


def write_chart(root: Path, name: str, *, icon: str | None = None, **files: str) -> Path:
    chart = root / name
    (chart / "templates").mkdir(parents=True)
    meta = {"apiVersion": "v2", "name": name, "version": "1.0.0", "description": f"{name} chart"}
    (chart / "Chart.yaml").write_text(yaml.safe_dump(meta | ({"icon": icon} if icon else {})))
    (chart / "templates" / "cm.yaml").write_text("kind: ConfigMap\n")
    for file, text in files.items():  # a__b.svg: b.svg in folder a
        path = chart / file.replace("__", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return chart


async def with_catalog(env: Env, tmp_path: Path, config: CatalogConfig) -> httpx.AsyncClient:
    """The platform with ``config`` after the shipped catalog, and a signed-in admin client."""
    env.platform.catalogs = type(env.platform.catalogs)(
        [*env.platform.settings.catalogs, config], cache_dir=tmp_path / "cache"
    )
    env.platform.services.catalogs = env.platform.catalogs
    await env.platform.catalogs.refresh()
    http = httpx.AsyncClient(transport=env.http._transport, base_url="http://testserver")
    await sign_in(http, "admin", ADMIN_PASSWORD)
    return http


def external_urls(html: str) -> list[str]:
    """Every URL the browser would load by itself (images, scripts, styles, icons) that is
    not on the platform's origin."""
    found = re.findall(
        r"<(?:img|script|link|source|iframe)\b[^>]*?\s(?:src|href)=\"([^\"]*)\"", html
    )
    return [url for url in found if not url.startswith("/") or url.startswith("//")]


async def test_catalog_pages_have_no_external_image(env: Env, tmp_path: Path) -> None:
    charts = tmp_path / "charts"
    write_chart(charts, "own", **{"icon.svg": SVG})
    write_chart(charts, "relative", icon="assets/logo.svg", **{"assets__logo.svg": SVG})
    write_chart(charts, "remote-icon", icon="https://icons.example.org/remote.png")
    write_chart(charts, "escape", icon="../own/icon.svg")
    http = await with_catalog(env, tmp_path, CatalogConfig(id="extra", location=str(charts)))

    for page in (
        "/catalog",
        "/catalog?tab=extra",
        "/launcher/extra/own",
        "/launcher/extra/remote-icon",
    ):
        html = (await http.get(page)).text
        assert external_urls(html) == [], page
    listing = (await http.get("/catalog?tab=extra")).text
    assert 'src="/ui/chart-icons/extra/own/1.0.0"' in listing
    assert 'src="/ui/chart-icons/extra/relative/1.0.0"' in listing
    # no icon of its own and downloads off: the initials, on a colour of the chart's name
    assert re.search(r'class="chart-icon initial tint-\d" aria-hidden="true">RI<', listing)
    assert re.search(r'class="chart-icon initial tint-\d" aria-hidden="true">E<', listing)
    shipped = (await http.get("/catalog")).text
    assert 'src="/ui/chart-icons/datalab/jupyter-python/' in shipped

    icon = await http.get("/ui/chart-icons/extra/own/1.0.0")
    assert icon.status_code == 200 and icon.text == SVG
    assert icon.headers["content-type"].startswith("image/svg+xml")
    # an SVG opened on its own is a sandboxed document that runs nothing
    assert "sandbox" in icon.headers["content-security-policy"]
    assert "script-src" not in icon.headers["content-security-policy"]
    missing = await http.get("/ui/chart-icons/extra/remote-icon/1.0.0")
    assert missing.status_code == 404 and "no icon" in missing.text
    unknown = await http.get("/ui/chart-icons/extra/nope/1.0.0")
    assert unknown.status_code == 404
    anonymous = httpx.AsyncClient(transport=env.http._transport, base_url="http://testserver")
    assert (await anonymous.get("/ui/chart-icons/extra/own/1.0.0")).status_code == 303


def test_keys_are_humanised_for_headings() -> None:
    assert humanise("extraEnvVars") == "Extra env vars"
    assert humanise("openshiftSCC") == "Openshift SCC"
    assert humanise("user_preferences") == "User preferences"
    assert humanise("kubernetes-role") == "Kubernetes role"
    assert humanise("s3") == "S3" and humanise("AWS_S3_ENDPOINT") == "AWS S3 ENDPOINT"
    assert humanise("service") == "Service" and humanise("_") == "_"


TABS_SCHEMA = {
    "type": "object",
    "properties": {
        "replicas": {"type": "integer", "default": 1},
        "resources": {
            "type": "object",
            "title": "Resources (CPU/RAM)",
            "properties": {"cpu": {"type": "string", "default": "1"}},
        },
        "extraEnvVars": {
            "type": "object",
            "properties": {
                "enabled": {"type": "boolean", "default": False},
                "nodeSelector": {
                    "type": "object",
                    "properties": {"zone": {"type": "string", "default": ""}},
                },
            },
        },
    },
}


def tab_names(html: str) -> list[str]:
    return re.findall(r'<button type="button" role="tab"[^>]*>([^<]*)</button>', html)


async def test_launcher_tabs_are_named_by_the_schema_titles(env: Env, tmp_path: Path) -> None:
    import json

    charts = tmp_path / "charts"
    write_chart(charts, "tabs", **{"values.schema.json": json.dumps(TABS_SCHEMA)})
    http = await with_catalog(env, tmp_path, CatalogConfig(id="extra", location=str(charts)))
    html = (await http.get("/launcher/extra/tabs")).text
    assert tab_names(html) == ["General", "Resources (CPU/RAM)", "Extra env vars"]
    assert "<legend>Node selector</legend>" in html
    # the shipped charts: no tab shows a raw key
    shipped = tab_names((await http.get("/launcher/datalab/jupyter-python")).text)
    assert shipped and all(name[0].isupper() for name in shipped), shipped


DARK_SCHEMA = {
    "type": "object",
    "properties": {
        "userPreferences": {
            "type": "object",
            "properties": {
                "darkMode": {
                    "type": "boolean",
                    "default": False,
                    "x-onyxia": {"overwriteDefaultWith": "user.darkMode"},
                },
                "language": {
                    "type": "string",
                    "default": "en",
                    "x-onyxia": {"overwriteDefaultWith": "user.lang"},
                },
            },
        }
    },
}


async def test_theme_is_kept_per_user_and_injected_as_user_dark_mode(
    env: Env, tmp_path: Path
) -> None:
    import json

    charts = tmp_path / "charts"
    write_chart(charts, "prefs", **{"values.schema.json": json.dumps(DARK_SCHEMA)})
    http = await with_catalog(env, tmp_path, CatalogConfig(id="extra", location=str(charts)))

    async def dark_mode() -> bool:
        preview = await env.admin.call(
            "GET", "/api/launch-preview", params={"catalog": "extra", "chart": "prefs"}
        )
        return bool(preview["values"]["userPreferences"]["darkMode"])

    me = await env.admin.call("GET", "/api/me")
    assert (me["theme"], me["system_dark"]) == ("system", False)
    assert 'data-theme="system" data-system-dark="false"' in (await http.get("/account")).text
    assert await dark_mode() is False
    # "system" follows what the browser last reported
    await env.admin.call("PATCH", "/api/me", json={"system_dark": True})
    assert await dark_mode() is True
    await env.admin.call("PATCH", "/api/me", json={"theme": "light"})
    assert await dark_mode() is False
    await env.admin.call("PATCH", "/api/me", json={"theme": "dark", "system_dark": False})
    assert await dark_mode() is True
    account = (await http.get("/account")).text
    assert '<html lang="en" data-theme="dark"' in account
    assert re.search(r'id="theme-dark" name="theme" value="dark"\s+checked', account)
    bad = await env.http.patch("/api/me", json={"theme": "pink"}, headers=env.admin.headers())
    assert bad.status_code == 422
    # another user keeps their own
    other = await env.user("olga")
    assert (await other.call("GET", "/api/me"))["theme"] == "system"


def test_localize_schema_and_localized_strings() -> None:
    from datalab.catalog.config import localized
    from datalab.web.forms import localize_schema

    schema = {
        "type": "object",
        "title": "Resources",
        "x-datalab": {"title": {"fr": "Ressources"}},
        "properties": {
            "cpu": {
                "type": "string",
                "description": "CPU limit",
                "x-datalab": {"description": {"fr": "Limite CPU", "de": "CPU-Grenze"}},
                # a value is never rewritten, even one shaped like a translation
                "default": {"x-datalab": {"title": {"fr": "non"}}, "title": "kept"},
            },
            "mem": {"type": "string", "title": "Memory"},
        },
    }
    french = localize_schema(schema, "fr")
    assert french["title"] == "Ressources"
    assert french["properties"]["cpu"]["description"] == "Limite CPU"
    assert french["properties"]["cpu"]["default"]["title"] == "kept"
    assert french["properties"]["mem"]["title"] == "Memory"  # no translation: its own
    assert localize_schema(schema, "en") == schema and schema["title"] == "Resources"
    assert localized({"en": "Services", "fr": "Les services"}, "fr") == "Les services"
    assert localized({"en": "Services", "fr": "Les services"}, "de") == "Services"
    assert (
        localized({"fr": "Seulement"}, "en") == "Seulement" and localized("Plain", "fr") == "Plain"
    )


async def test_chart_texts_in_the_pages_language(env: Env, tmp_path: Path) -> None:
    import json

    charts = tmp_path / "charts"
    chart = write_chart(charts, "traduit", **{"values.schema.json": json.dumps(TABS_SCHEMA)})
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    meta["annotations"] = {"datalab/description.fr": "Un chart <b>traduit</b>"}
    (chart / "Chart.yaml").write_text(yaml.safe_dump(meta))
    schema = json.loads(json.dumps(TABS_SCHEMA))
    schema["properties"]["resources"]["x-datalab"] = {"title": {"fr": "Ressources (CPU/RAM)"}}
    (chart / "values.schema.json").write_text(json.dumps(schema))
    config = CatalogConfig(
        id="extra",
        name={"en": "Extra services", "fr": "Services en plus"},
        description={"en": "More charts", "fr": "D'autres charts"},
        location=str(charts),
    )
    http = await with_catalog(env, tmp_path, config)

    english = (await http.get("/catalog?tab=extra")).text
    assert "Extra services" in english and "More charts" in english
    assert "traduit chart" in english and "Un chart" not in english
    launcher = (await http.get("/launcher/extra/traduit")).text
    assert tab_names(launcher) == ["General", "Resources (CPU/RAM)", "Extra env vars"]

    await env.admin.call("PATCH", "/api/me", json={"lang": "fr"})
    french = (await http.get("/catalog?tab=extra")).text
    assert "Services en plus" in french and "D&#39;autres charts" in french
    assert "Un chart &lt;b&gt;traduit&lt;/b&gt;" in french  # translated, and escaped
    assert (await http.get("/catalog?tab=extra&q=traduit")).text.count("chart-card") >= 1
    launcher = (await http.get("/launcher/extra/traduit")).text
    assert tab_names(launcher)[1] == "Ressources (CPU/RAM)"
    assert "Un chart &lt;b&gt;traduit&lt;/b&gt;" in launcher
    # the shipped charts: their description and the registry's fragments are translated
    shipped = (await http.get("/catalog")).text
    assert "JupyterLab avec les outils Python de la donnée" in shipped
    tabs = tab_names((await http.get("/launcher/datalab/jupyter-python")).text)
    assert "Ressources" in tabs and "Persistance" in tabs, tabs
    assert (
        "Mémoire maximale du service" in (await http.get("/launcher/datalab/jupyter-python")).text
    )
    await env.admin.call("PATCH", "/api/me", json={"lang": "en"})
