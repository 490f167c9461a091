"""Secrets: the KV tree listed server-side through the secrets store (the same calls as the
secrets API). Values are never rendered in the page: the editor (static/secrets.js) reads and
writes them through the secrets API when the user opens a secret."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from datalab.errors import DatalabError
from datalab.http.deps import store
from datalab.web.context import PageDep
from datalab.web.routes.files import crumbs

router = APIRouter(include_in_schema=False)


@router.get("/secrets")
async def secrets_page(page: PageDep, path: str = "") -> Response:
    principal = page.require()
    try:
        secrets = store(page.platform)
    except DatalabError as exc:
        return page.render("secrets.html", unavailable=page.message(exc))
    directory = path if not path or path.endswith("/") else path + "/"
    entries: list[str] = []
    error = None
    try:
        entries = (await secrets.list(principal, directory.rstrip("/"))).entries
    except DatalabError as exc:
        error = page.message(exc)
    return page.render(
        "secrets.html",
        unavailable=None,
        error=error,
        directory=directory,
        crumbs=crumbs(directory),
        folders=[e for e in entries if e.endswith("/")],
        secrets=[e for e in entries if not e.endswith("/")],
    )
