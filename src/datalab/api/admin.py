"""Administration: users, projects, and every service (admins only)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from datalab.api.responses import AUTHENTICATED
from datalab.errors import InvalidInput
from datalab.http.deps import AdminDep, PlatformDep, PrincipalDep, SessionDep, UserDep
from datalab.http.schemas import (
    AllServices,
    Member,
    NewProject,
    NewUser,
    Orphans,
    PasswordReset,
    PasswordResetDone,
    ProjectOut,
    UserCreated,
    UserOut,
)
from datalab.http.views import project_out, projects_of, user_out
from datalab.identity import accounts
from datalab.identity.access import require_admin

router = APIRouter(prefix="/api", tags=["admin"], responses=AUTHENTICATED)


@router.get("/users", summary="List users (admin)")
def list_users(_: AdminDep, session: SessionDep) -> list[UserOut]:
    return [user_out(u) for u in accounts.list_users(session)]


@router.post("/users", summary="Create a user (admin)", status_code=201)
def create_user(
    body: NewUser, _: AdminDep, session: SessionDep, platform: PlatformDep
) -> UserCreated:
    user, password = accounts.create_user(
        session,
        platform.settings.region,
        body.name,
        password=body.password,
        email=body.email,
        is_admin=body.is_admin,
    )
    shown = None if body.password else password
    return UserCreated(**user_out(user).model_dump(), password=shown)


@router.post(
    "/users/{name}/disable",
    summary="Disable a user: revoke their API and Vault tokens, end their web sessions, "
    "suspend their services (admin)",
)
async def disable_user(name: str, caller: AdminDep, platform: PlatformDep) -> UserOut:
    if name == caller.name:
        raise InvalidInput("you cannot disable your own account")
    await platform.services.disable_user(name)
    with platform.db.session() as session:
        return user_out(accounts.get_user(session, name))


@router.post("/users/{name}/enable", summary="Enable a user (admin)")
async def enable_user(name: str, _: AdminDep, platform: PlatformDep) -> UserOut:
    await platform.services.enable_user(name)
    with platform.db.session() as session:
        return user_out(accounts.get_user(session, name))


@router.post("/users/{name}/reset-password", summary="Reset a user's password (admin)")
def reset_password(
    name: str, body: PasswordReset, _: AdminDep, session: SessionDep
) -> PasswordResetDone:
    password = accounts.reset_password(session, name, body.password)
    return PasswordResetDone(user=name, password=None if body.password else password)


@router.get(
    "/admin/orphans",
    summary="Services the backend runs that the platform has no record of (admin)",
)
async def list_orphans(_: AdminDep, platform: PlatformDep) -> Orphans:
    """E.g. a Helm release labelled as datalab's whose record was lost (a restored database):
    never deleted by the platform; an administrator inspects it (``helm status -n NAMESPACE
    NAME``) and removes it."""
    return Orphans(backend=platform.backend.name, orphans=await platform.services.orphans())


@router.get("/admin/services", summary="Every service of every project, or of one owner (admin)")
async def list_all_services(
    _: AdminDep, platform: PlatformDep, owner: str | None = None
) -> AllServices:
    """Administrators suspend or delete any of them with the usual endpoints
    (``POST /api/services/{id}/suspend``, ``DELETE /api/services/{id}``), from any project."""
    return AllServices(services=await platform.services.list_all(owner))


@router.get("/projects", summary="Projects: mine, or all with ?all=true (admin)")
def list_projects(
    caller: PrincipalDep, user: UserDep, session: SessionDep, all: bool = False
) -> list[ProjectOut]:
    if all:
        require_admin(caller)
        return [project_out(p, members=True) for p in accounts.list_projects(session)]
    return projects_of(session, user, members=True)


@router.post(
    "/projects",
    summary="Create a shared project (admin); its creator becomes its admin member",
    status_code=201,
)
def create_project(
    body: NewProject, _: AdminDep, creator: UserDep, session: SessionDep, platform: PlatformDep
) -> ProjectOut:
    project = accounts.create_project(
        session, platform.settings.region, body.name, body.display_name, creator=creator
    )
    return project_out(project, members=True)


@router.post("/projects/{project_id}/members", summary="Add or update a member (admin)")
async def add_member(
    project_id: str, body: Member, _: AdminDep, platform: PlatformDep
) -> ProjectOut:
    with platform.db.session() as session:
        accounts.add_member(session, project_id, body.user, body.role)
    await platform.services.sync_projects([project_id])  # e.g. their namespace's RoleBinding
    with platform.db.session() as session:
        return project_out(accounts.get_project(session, project_id), members=True)


@router.delete(
    "/projects/{project_id}/members/{user}", summary="Remove a member (admin)", status_code=204
)
async def remove_member(project_id: str, user: str, _: AdminDep, platform: PlatformDep) -> Response:
    with platform.db.session() as session:
        accounts.remove_member(session, project_id, user)
    await platform.services.sync_projects([project_id])  # they lose it at once
    return Response(status_code=204)
