"""Administration: users, projects and members, quotas (changes go through the JSON API)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from datalab.api.views import project_out, user_out
from datalab.errors import DatalabError
from datalab.identity import accounts
from datalab.identity.access import require_admin
from datalab.web.context import PageDep

router = APIRouter(include_in_schema=False)


@router.get("/admin")
def admin_page(page: PageDep) -> Response:
    principal = page.require()
    try:
        require_admin(principal)
    except DatalabError as exc:
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
