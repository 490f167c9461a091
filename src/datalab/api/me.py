"""The caller: profile, projects, API tokens, password."""

from __future__ import annotations

import re

from fastapi import APIRouter, Request, Response

from datalab.api.responses import AUTHENTICATED
from datalab.errors import InvalidInput
from datalab.http.deps import PlatformDep, PrincipalDep, SessionDep, UserDep
from datalab.http.schemas import (
    MeOut,
    NewToken,
    PasswordChange,
    ProfileUpdate,
    RowId,
    TokenCreated,
    TokenOut,
)
from datalab.http.views import projects_of, token_out, user_out
from datalab.identity import accounts

router = APIRouter(prefix="/api/me", tags=["me"], responses=AUTHENTICATED)

EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


@router.get("", summary="Who am I, in which project")
def me(caller: PrincipalDep, user: UserDep, session: SessionDep, request: Request) -> MeOut:
    return MeOut(
        **user_out(user).model_dump(),
        git_name=user.git_name,
        git_email=user.git_email,
        git_token_set=bool(user.git_token),
        lang=user.lang,
        theme=user.theme,
        system_dark=user.system_dark,
        project=caller.project_id,
        project_role=caller.project_role,
        projects=projects_of(session, user),
        csrf_token=request.session.get("csrf") if caller.via == "session" else None,
    )


@router.patch("", summary="Change my profile: email, git identity and token, language, theme")
def update_profile(
    body: ProfileUpdate,
    caller: PrincipalDep,
    user: UserDep,
    session: SessionDep,
    request: Request,
) -> MeOut:
    changes = body.model_dump(exclude_unset=True)
    if changes.get("lang"):
        user.lang = changes["lang"]
    if changes.get("theme"):
        user.theme = changes["theme"]
    if changes.get("system_dark") is not None:
        user.system_dark = changes["system_dark"]
    for key in ("email", "git_name", "git_email"):
        if key not in changes:
            continue
        text = (changes[key] or "").strip()
        if key != "git_name" and text and not EMAIL.fullmatch(text):
            raise InvalidInput(f"{key}: {text!r} is not an email address (name@domain)")
        setattr(user, key, text or None)
    if "git_token" in changes:
        token = (changes["git_token"] or "").strip()
        if any(c.isspace() or not c.isprintable() for c in token):
            raise InvalidInput("git_token: a token has no spaces nor control characters")
        user.git_token = token or None
    return me(caller, user, session, request)


@router.get("/tokens", summary="My API tokens")
def list_tokens(user: UserDep, session: SessionDep) -> list[TokenOut]:
    return [token_out(t) for t in accounts.list_tokens(session, user)]


@router.post("/tokens", summary="Create an API token (shown once)", status_code=201)
def create_token(
    body: NewToken, user: UserDep, session: SessionDep, platform: PlatformDep
) -> TokenCreated:
    ttl = body.ttl_days or platform.settings.security.token_default_ttl_days
    token, raw = accounts.create_token(session, user, body.name, ttl)
    return TokenCreated(**token_out(token).model_dump(), token=raw)


@router.delete("/tokens/{token_id}", summary="Revoke an API token", status_code=204)
def revoke_token(token_id: RowId, user: UserDep, session: SessionDep) -> Response:
    accounts.revoke_token(session, user, token_id)
    return Response(status_code=204)


@router.post("/password", summary="Change my password", status_code=204)
def change_password(body: PasswordChange, user: UserDep, session: SessionDep) -> Response:
    accounts.change_password(session, user, body.current, body.new)
    return Response(status_code=204)
