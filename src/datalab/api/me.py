"""The caller: profile, projects, API tokens, password."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from datalab.api.deps import PlatformDep, PrincipalDep, SessionDep
from datalab.api.schemas import MeOut, NewToken, PasswordChange, TokenCreated, TokenOut
from datalab.api.views import project_out, token_out
from datalab.db import User
from datalab.identity import accounts

router = APIRouter(prefix="/api/me", tags=["me"])


@router.get("", summary="Who am I, in which project")
def me(caller: PrincipalDep, session: SessionDep, request: Request) -> MeOut:
    user = session.get(User, caller.user_id)
    assert user is not None
    projects = []
    for project in accounts.list_projects(session, user):
        membership = accounts.membership_of(session, user, project.id)
        projects.append(project_out(project, role=membership.role if membership else None))
    return MeOut(
        name=user.name,
        email=user.email,
        is_admin=user.is_admin,
        disabled=user.disabled,
        created_at=user.created_at,
        project=caller.project_id,
        project_role=caller.project_role,
        projects=projects,
        csrf_token=request.session.get("csrf") if caller.via == "session" else None,
    )


@router.get("/tokens", summary="My API tokens")
def list_tokens(caller: PrincipalDep, session: SessionDep) -> list[TokenOut]:
    user = session.get(User, caller.user_id)
    assert user is not None
    return [token_out(t) for t in accounts.list_tokens(session, user)]


@router.post("/tokens", summary="Create an API token (shown once)", status_code=201)
def create_token(
    body: NewToken, caller: PrincipalDep, session: SessionDep, platform: PlatformDep
) -> TokenCreated:
    user = session.get(User, caller.user_id)
    assert user is not None
    ttl = body.ttl_days or platform.settings.security.token_default_ttl_days
    token, raw = accounts.create_token(session, user, body.name, ttl)
    return TokenCreated(**token_out(token).model_dump(), token=raw)


@router.delete("/tokens/{token_id}", summary="Revoke an API token", status_code=204)
def revoke_token(token_id: int, caller: PrincipalDep, session: SessionDep) -> Response:
    user = session.get(User, caller.user_id)
    assert user is not None
    accounts.revoke_token(session, user, token_id)
    return Response(status_code=204)


@router.post("/password", summary="Change my password", status_code=204)
def change_password(body: PasswordChange, caller: PrincipalDep, session: SessionDep) -> Response:
    user = session.get(User, caller.user_id)
    assert user is not None
    accounts.change_password(session, user, body.current, body.new)
    return Response(status_code=204)
