"""The S3 explorer: buckets and prefixes listed server-side through the storage service (the
same calls as the storage API); uploads, downloads, deletions, folders, share links, public
prefixes, previews and code snippets are calls from the browser to the storage API
(static/files.js)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from datalab.errors import DatalabError
from datalab.http.deps import broker
from datalab.storage.objects import ObjectListing
from datalab.web.context import PageDep

router = APIRouter(include_in_schema=False)


def crumbs(prefix: str) -> list[dict[str, str]]:
    """``a/b/`` → [{name: a, prefix: a/}, {name: b, prefix: a/b/}]"""
    found, path = [], ""
    for part in [p for p in prefix.split("/") if p]:
        path += part + "/"
        found.append({"name": part, "prefix": path})
    return found


@router.get("/files")
async def files_page(
    page: PageDep, bucket: str | None = None, prefix: str = "", token: str | None = None
) -> Response:
    principal = page.require()
    try:
        store = broker(page.platform).objects
    except DatalabError as exc:
        return page.render("files.html", unavailable=page.message(exc), listing=None)
    buckets = store.buckets(principal)
    if not bucket:  # the current project's bucket when it has one of its own
        bucket = principal.project_id if principal.project_id in buckets else buckets[0]
    listing: ObjectListing | None = None
    public: list[str] = []
    error = None
    try:
        listing = await store.list(principal, bucket, prefix, "/", 500, token)
        public = await store.public_prefixes(principal, bucket)
    except DatalabError as exc:
        error = page.message(exc)
    return page.render(
        "files.html",
        unavailable=None,
        error=error,
        buckets=buckets,
        bucket=bucket,
        prefix=prefix,
        crumbs=crumbs(prefix),
        listing=listing,
        public=prefix in public or "" in public,
        public_prefixes=public,
    )
