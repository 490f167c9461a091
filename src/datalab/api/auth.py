"""Sign in and out (web sessions) and exchange a password for an API token (CLI)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from datalab.api.deps import PlatformDep, SessionDep, end_web_session, start_web_session
from datalab.api.responses import SIGN_IN
from datalab.api.schemas import Credentials, TokenCreated, TokenRequest
from datalab.api.views import token_out
from datalab.db import User
from datalab.errors import TooManyRequests, Unauthenticated
from datalab.forwarded import client_address
from datalab.identity import accounts

router = APIRouter(prefix="/api/auth", tags=["auth"], responses=SIGN_IN)


def _check_credentials(
    platform: PlatformDep, session: SessionDep, request: Request, body: Credentials
) -> User:
    throttle = platform.login_throttle
    client = client_address(request.scope) or "unknown"
    wait = throttle.retry_after(body.username, client)
    if wait > 0:
        raise TooManyRequests(
            f"too many failed sign-ins for {body.username!r}; try again in {int(wait) + 1} s",
            retry_after=wait,
        )
    user = accounts.authenticate(session, body.username, body.password)
    if user is None:
        throttle.record_failure(body.username, client)
        raise Unauthenticated("wrong user name or password, or the account is disabled")
    throttle.record_success(body.username, client)
    return user


@router.post("/login", summary="Sign in (web session cookie)")
def login(
    body: Credentials, request: Request, platform: PlatformDep, session: SessionDep
) -> dict[str, str]:
    user, csrf = sign_in(platform, session, request, body)
    return {"user": user.name, "csrf_token": csrf}


def sign_in(
    platform: PlatformDep, session: SessionDep, request: Request, body: Credentials
) -> tuple[User, str]:
    """Check the credentials and start a fresh web session; returns the user and the session's
    CSRF token. Shared by this endpoint and the web UI's sign-in form."""
    user = _check_credentials(platform, session, request, body)
    return user, start_web_session(request, session, user)


@router.post("/logout", summary="Sign out (the session ends on the server too)", status_code=204)
def logout(request: Request, session: SessionDep) -> Response:
    end_web_session(request, session)
    return Response(status_code=204)


@router.post("/token", summary="Create an API token from a user name and password", status_code=201)
def create_token(
    body: TokenRequest, request: Request, platform: PlatformDep, session: SessionDep
) -> TokenCreated:
    user = _check_credentials(platform, session, request, body)
    ttl = body.ttl_days or platform.settings.security.token_default_ttl_days
    token, raw = accounts.create_token(session, user, body.token_name, ttl)
    return TokenCreated(**token_out(token).model_dump(), token=raw)
