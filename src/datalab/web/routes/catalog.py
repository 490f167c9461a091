"""The catalog (catalogs as tabs, chart cards, search) and the launcher generated from a chart's
resolved values schema."""

from __future__ import annotations

import copy
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse, Response

from datalab.catalog.icons import media_type
from datalab.catalog.merge import coalesce
from datalab.errors import DatalabError, NotFound, ValuesError
from datalab.identity.access import Principal
from datalab.web.context import Page, PageDep
from datalab.web.forms import build_form, fields, localize_schema, parse_prefill

router = APIRouter(include_in_schema=False)

MAX_SECRET_SUGGESTIONS = 200

#: chart icons are images, never documents: an SVG opened on its own runs nothing
ICON_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; sandbox",
    "Cache-Control": "private, max-age=300",
}

#: query parameters of the launcher that are not values
LAUNCHER_PARAMS = {"version", "name", "friendly_name", "shared", "autolaunch"}


def _search_text(chart: dict[str, Any]) -> str:
    """What the search matches: name, description (also its translation), keywords."""
    texts = [chart["name"], chart["description"], chart.get("original_description", "")]
    return " ".join([*texts, *chart["keywords"]]).lower()


def _matches(chart: dict[str, Any], query: str) -> bool:
    text = _search_text(chart)
    return all(word in text for word in query.lower().split())


def _in_language(catalog: dict[str, Any], lang: str) -> dict[str, Any]:
    """A catalog's listing with its texts and its charts' descriptions in ``lang`` where they
    are translated (catalogs: Onyxia's LocalizedString; charts: ``datalab/description.<lang>``
    annotations)."""
    translations = catalog.get("translations") or {}
    charts = [
        {
            **chart,
            "description": (chart.get("descriptions") or {}).get(lang) or chart["description"],
            "original_description": chart["description"],
        }
        for chart in catalog["charts"]
    ]
    for chart in charts:
        chart["search_text"] = _search_text(chart)
    return {
        **catalog,
        "name": (translations.get("name") or {}).get(lang) or catalog["name"],
        "description": (translations.get("description") or {}).get(lang) or catalog["description"],
        "charts": charts,
    }


@router.get("/catalog")
def catalog_page(
    page: PageDep, tab: str | None = None, q: str = "", with_secret: str = ""
) -> Response:
    """``with_secret``: a secret path the launch links pre-fill as ``vault.secret``."""
    page.require()
    catalogs = [_in_language(c.to_json(), page.lang) for c in page.platform.catalogs.catalogs()]
    current = next((c for c in catalogs if c["id"] == tab), catalogs[0] if catalogs else None)
    charts = []
    if current is not None:
        highlighted = set(current["highlighted"])
        charts = [
            {**chart, "highlighted": chart["name"] in highlighted}
            for chart in current["charts"]
            if not q.strip() or _matches(chart, q)
        ]
    return page.render(
        "catalog.html",
        catalogs=catalogs,
        current=current,
        charts=charts,
        q=q,
        with_secret=with_secret.strip(),
    )


@router.get("/ui/chart-icons/{catalog_id}/{chart_name}/{version}")
def chart_icon(page: PageDep, catalog_id: str, chart_name: str, version: str) -> Response:
    """A chart's icon file (its own, or its remote icon downloaded at catalog load): see
    :mod:`datalab.catalog.icons`. 404 when it has none (the page shows its initials)."""
    page.require()
    try:
        chart = page.platform.catalogs.get_chart(catalog_id, chart_name, version)
        if chart.icon_path is None:
            raise NotFound(f"chart {chart_name!r} has no icon")
    except DatalabError as exc:
        return Response(page.message(exc), status_code=exc.status, media_type="text/plain")
    return FileResponse(
        chart.icon_path, media_type=media_type(chart.icon_path), headers=ICON_HEADERS
    )


@router.get("/launcher/{catalog_id}/{chart_name}")
async def launcher_page(
    page: PageDep,
    catalog_id: str,
    chart_name: str,
    version: str | None = None,
    name: str = "",
    friendly_name: str = "",
    shared: bool = False,
    autolaunch: bool = False,
) -> Response:
    principal = page.require()
    services = page.platform.services
    try:
        chart = page.platform.catalogs.get_chart(catalog_id, chart_name, version)
        _, defaults = await services.resolve(principal, catalog_id, chart.name, chart.version)
    except DatalabError as exc:
        return page.error(exc)
    query = [(k, v) for k, v in page.request.query_params.multi_items()]
    prefill = parse_prefill([(k, v) for k, v in query if k not in LAUNCHER_PARAMS], defaults.schema)
    current, problems = defaults.values, []
    if prefill:
        try:
            _, resolved = await services.resolve(
                principal, catalog_id, chart.name, chart.version, overrides=prefill
            )
            current = resolved.values
        except ValuesError as exc:  # shown as given, with the problems next to the fields
            current = coalesce(copy.deepcopy(defaults.values), prefill)
            problems = [p.to_json() for p in exc.problems]
    personal = principal.project_id == next(
        (p.id for p in page.projects if p.personal), principal.project_id
    )
    sections = build_form(localize_schema(defaults.schema, page.lang), defaults.values, current)
    secret_paths: list[str] = []
    if any(f.suggest == "secrets" for f in fields(sections)):
        secret_paths = await _secret_paths(page, principal)
    return page.render(
        "launcher.html",
        secret_paths=secret_paths,
        chart=chart,
        catalog_id=catalog_id,
        sections=sections,
        problems=problems,
        name=name,
        friendly_name=friendly_name or chart.name,
        shared=shared and not personal,
        personal=personal,
        autolaunch=autolaunch,
    )


async def _secret_paths(page: Page, principal: Principal) -> list[str]:
    """The caller's secrets (two directory levels), for the ``vault.secret`` suggestions;
    none when the secrets store is off or unreachable (the field still takes a typed path)."""
    broker = page.platform.services.credentials
    if broker is None or broker.secret_store is None:
        return []
    found: list[str] = []
    directories = [f"{top}/" for top in broker.secrets.tops(principal)]
    for _ in range(2):
        deeper: list[str] = []
        for directory in directories:
            try:
                entries = (await broker.secrets.list(principal, directory)).entries
            except DatalabError:
                continue
            for entry in entries:
                (deeper if entry.endswith("/") else found).append(directory + entry)
        directories = deeper
    return sorted(found)[:MAX_SECRET_SUGGESTIONS]
