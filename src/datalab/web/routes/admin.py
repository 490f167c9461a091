"""Administration: users, projects and members, quotas (changes go through the JSON API), and
the audit log (read with the same query as the audit API)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

from fastapi import APIRouter
from fastapi.responses import Response

from datalab import audit
from datalab.errors import DatalabError, Forbidden, InvalidInput
from datalab.http.views import project_out, user_out
from datalab.identity import accounts
from datalab.web.context import PageDep

router = APIRouter(include_in_schema=False)


@router.get("/admin")
def admin_page(page: PageDep) -> Response:
    try:
        page.require_admin()
    except Forbidden as exc:
        return page.error(exc)
    region = page.platform.settings.region
    with page.platform.db.session() as session:
        users = [user_out(u) for u in accounts.list_users(session)]
        projects = [project_out(p, members=True) for p in accounts.list_projects(session)]
    return page.render(
        "admin.html",
        users=users,
        projects=projects,
        quotas={"user": region.user_quota, "project": region.project_quota},
    )


OUTCOMES = ("success", "denied", "failed")


def _day(text: str, field: str, *, end: bool = False) -> datetime | None:
    """A YYYY-MM-DD filter as a UTC datetime (the end of the day for ``until``)."""
    if not text:
        return None
    try:
        day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise InvalidInput(f"{field}: {text!r} is not a date (YYYY-MM-DD)") from None
    return day + timedelta(days=1) if end else day


@router.get("/admin/audit")
def audit_page(
    page: PageDep,
    user: str = "",
    project: str = "",
    action: str = "",
    outcome: str = "",
    since: str = "",
    until: str = "",
    before_id: int | None = None,
) -> Response:
    try:
        page.require_admin()
    except Forbidden as exc:
        return page.error(exc)
    filters_form = {
        "user": user,
        "project": project,
        "action": action,
        "outcome": outcome,
        "since": since,
        "until": until,
    }
    try:
        if outcome and outcome not in OUTCOMES:
            raise InvalidInput(f"outcome must be one of {', '.join(OUTCOMES)}")
        filters = audit.Filters(
            user or None,
            project or None,
            action or None,
            outcome or None,
            _day(since, "since"),
            _day(until, "until", end=True),
        )
    except DatalabError as exc:
        return page.render(
            "audit.html",
            status=exc.status,
            entries=[],
            form=filters_form,
            error=page.message(exc),
            outcomes=OUTCOMES,
            query="",
            older=None,
        )
    limit = 100
    with page.platform.db.session() as session:
        rows = audit.query(session, filters, before_id=before_id, limit=limit)
        entries = [audit.entry_out(e) for e in rows]
    query = urlencode({k: v for k, v in filters_form.items() if v})
    older = entries[-1].id if len(entries) == limit else None
    return page.render(
        "audit.html",
        entries=entries,
        form=filters_form,
        error=None,
        outcomes=OUTCOMES,
        query=query,
        older=older,
    )
