"""The audit log, for administrators: query (newest first, paged) and JSON lines export."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from datalab import audit
from datalab.api.responses import AUTHENTICATED, content
from datalab.audit import AuditEntryOut
from datalab.http.deps import AdminDep, PlatformDep, SessionDep

router = APIRouter(prefix="/api/audit", tags=["audit"], responses=AUTHENTICATED)

Outcome = Literal["success", "denied", "failed"]


class AuditPage(BaseModel):
    entries: list[AuditEntryOut] = Field(description="Newest first.")
    next_before_id: int | None = Field(
        description="before_id for the next page; None on the last page."
    )


def _filters(
    user: str | None,
    project: str | None,
    action: str | None,
    outcome: Outcome | None,
    since: datetime | None,
    until: datetime | None,
) -> audit.Filters:
    return audit.Filters(user, project, action, outcome, since, until)


@router.get("", summary="Audit log entries, newest first (admin)")
def entries(
    caller: AdminDep,
    session: SessionDep,
    user: str | None = None,
    project: str | None = None,
    action: Annotated[str | None, Query(description="Action prefix, e.g. services")] = None,
    outcome: Outcome | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before_id: Annotated[int | None, Query(description="Page: entries older than this id")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuditPage:
    filters = _filters(user, project, action, outcome, since, until)
    rows = audit.query(session, filters, before_id=before_id, limit=limit)
    return AuditPage(
        entries=[audit.entry_out(e) for e in rows],
        next_before_id=rows[-1].id if len(rows) == limit else None,
    )


@router.get(
    "/export",
    summary="Matching audit entries as JSON lines, oldest first (admin)",
    responses=content("application/x-ndjson", "One JSON object per line"),
)
def export(
    caller: AdminDep,
    platform: PlatformDep,
    user: str | None = None,
    project: str | None = None,
    action: str | None = None,
    outcome: Outcome | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> StreamingResponse:
    filters = _filters(user, project, action, outcome, since, until)
    return StreamingResponse(
        audit.export_lines(platform.db, filters),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": 'attachment; filename="audit.jsonl"'},
    )
