"""Request dependencies of the API and the web UI: the platform, a database session, the
caller, signing in and out, and the object and secret stores (when enabled).

:func:`principal` is the single dependency that authenticates a request (API token or web
session) and resolves the project it acts in; ownership checks then go through
:mod:`datalab.identity.access`.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Query, Request
from sqlalchemy.orm import Session
from starlette.requests import HTTPConnection

from datalab.db import User
from datalab.errors import (
    Forbidden,
    SecretsDisabled,
    StorageDisabled,
    TooManyRequests,
    Unauthenticated,
)
from datalab.forwarded import client_address
from datalab.http.schemas import Credentials
from datalab.identity import accounts, sessions
from datalab.identity.access import Principal, principal_for, require_admin
from datalab.injection import CredentialBroker
from datalab.platform import Platform
from datalab.secrets.store import SecretStore

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "X-CSRF-Token"
SESSION_ID = "sid"  # the session cookie's key naming its server-side session


def platform(request: HTTPConnection) -> Platform:
    return request.app.state.platform


def db_session(request: Request) -> Iterator[Session]:
    with platform(request).db.session() as session:
        yield session


#: The session commits when the handler returns, *before* the response is sent (FastAPI's
#: default for dependencies with yield is after it): a client that reads right after a write
#: (the web UI reloading a page, a script) must see it.
DbSession = Depends(db_session, scope="function")


def authenticated_user(
    request: HTTPConnection, session: Session, *, csrf_checked: bool = False
) -> tuple[User, str]:
    """The calling user and how they authenticated ("token" or "session").

    ``csrf_checked``: the caller (a web form handler) already compared the form's CSRF field.
    """
    authorization = request.headers.get("authorization")
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise Unauthenticated("use 'Authorization: Bearer <API token>'")
        return accounts.user_for_token(session, credentials.strip()), "token"
    if request.session.get("uid") is None:
        raise Unauthenticated("sign in, or send an API token as 'Authorization: Bearer <token>'")
    max_age_s = platform(request).settings.security.session_max_age_s
    user = sessions.signed_in_user(session, request.session, max_age_s)
    if user is None:
        request.session.clear()
        raise Unauthenticated("your session has ended; sign in again")
    if not csrf_checked and request.scope.get("method") not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        expected = request.session.get("csrf", "")
        if not expected or not hmac.compare_digest(sent, expected):
            raise Forbidden(f"missing or wrong {CSRF_HEADER} header (CSRF protection)")
    return user, "session"


def start_web_session(request: HTTPConnection, session: Session, user: User) -> str:
    """Sign ``user`` in with a fresh session cookie (nothing kept from before: no fixation)
    naming a new server-side session; returns the session's CSRF token."""
    max_age_s = platform(request).settings.security.session_max_age_s
    csrf = secrets.token_urlsafe(32)
    request.session.clear()
    request.session.update(
        {
            "uid": user.id,
            SESSION_ID: sessions.start(session, user, max_age_s),
            "csrf": csrf,
            "pwv": sessions.password_version(user),
        }
    )
    return csrf


def end_web_session(request: HTTPConnection, session: Session) -> None:
    """Sign out: the session ends on the server too, so a copy of the cookie is worthless."""
    sessions.end(session, request.session.get(SESSION_ID))
    request.session.clear()


def principal(
    request: Request,
    x_datalab_project: Annotated[str | None, Header(description="Project to act in.")] = None,
    project: Annotated[str | None, Query(description="Project to act in (or header).")] = None,
) -> Principal:
    # its own short transaction: the service layer opens others, and SQLite allows one writer
    with platform(request).db.session() as session:
        user, via = authenticated_user(request, session)
        return principal_for(session, user, x_datalab_project or project, via)


def current_user(
    caller: Annotated[Principal, Depends(principal)],
    session: Annotated[Session, DbSession],
) -> User:
    """The caller's user row, in the request's database session."""
    user = session.get(User, caller.user_id)
    if user is None:  # deleted between authentication and now
        raise Unauthenticated("your account no longer exists")
    return user


def admin(caller: Annotated[Principal, Depends(principal)]) -> Principal:
    require_admin(caller)
    return caller


PlatformDep = Annotated[Platform, Depends(platform)]
SessionDep = Annotated[Session, DbSession]
PrincipalDep = Annotated[Principal, Depends(principal)]
AdminDep = Annotated[Principal, Depends(admin)]
UserDep = Annotated[User, Depends(current_user)]


def check_credentials(
    platform: PlatformDep, session: SessionDep, request: Request, body: Credentials
) -> User:
    """The user these credentials name; failed attempts are throttled per user and client."""
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


def sign_in(
    platform: PlatformDep, session: SessionDep, request: Request, body: Credentials
) -> tuple[User, str]:
    """Check the credentials and start a fresh web session; returns the user and the session's
    CSRF token. Shared by the API's sign-in endpoint and the web UI's sign-in form."""
    user = check_credentials(platform, session, request, body)
    return user, start_web_session(request, session, user)


def broker(platform: PlatformDep) -> CredentialBroker:
    """The credentials broker, when object storage is enabled."""
    credentials = platform.services.credentials
    if platform.storage is None or credentials is None:
        raise StorageDisabled("object storage is not enabled on this platform (storage.mode)")
    return credentials


def store(platform: PlatformDep) -> SecretStore:
    """The secrets store, when enabled."""
    broker = platform.services.credentials
    if platform.secret_store is None or broker is None:
        raise SecretsDisabled("the secrets store is not enabled on this platform (secrets.mode)")
    return broker.secrets
