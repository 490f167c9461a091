"""Sign in and out (web sessions) and exchange a password for an API token (CLI)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from datalab.api.responses import SIGN_IN
from datalab.http.deps import PlatformDep, SessionDep, check_credentials, end_web_session, sign_in
from datalab.http.schemas import Credentials, SignedIn, TokenCreated, TokenRequest
from datalab.http.views import token_out
from datalab.identity import accounts

router = APIRouter(prefix="/api/auth", tags=["auth"], responses=SIGN_IN)


@router.post("/login", summary="Sign in (web session cookie)")
def login(
    body: Credentials, request: Request, platform: PlatformDep, session: SessionDep
) -> SignedIn:
    user, csrf = sign_in(platform, session, request, body)
    return SignedIn(user=user.name, csrf_token=csrf)


@router.post("/logout", summary="Sign out (the session ends on the server too)", status_code=204)
def logout(request: Request, session: SessionDep) -> Response:
    end_web_session(request, session)
    return Response(status_code=204)


@router.post("/token", summary="Create an API token from a user name and password", status_code=201)
def create_token(
    body: TokenRequest, request: Request, platform: PlatformDep, session: SessionDep
) -> TokenCreated:
    user = check_credentials(platform, session, request, body)
    ttl = body.ttl_days or platform.settings.security.token_default_ttl_days
    token, raw = accounts.create_token(session, user, body.token_name, ttl)
    return TokenCreated(**token_out(token).model_dump(), token=raw)
