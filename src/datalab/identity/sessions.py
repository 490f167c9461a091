"""Web sessions that end on the server.

The session cookie is signed (it cannot be forged) but it lives in the browser: a copy of it
would keep working until it expires, whatever the user does. So each sign-in also creates a
row (:class:`datalab.db.WebSession`) named by a random id that the cookie carries; a request
whose cookie names no live row is not signed in. Signing out deletes the row.

A row expires ``max_age_s`` after the session was last used, like the cookie, whose signature
is renewed by every response: to keep writes rare, its expiry moves forward at most once every
``REFRESH_EVERY_S``.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete
from sqlalchemy.orm import Session

from datalab.db import User, WebSession

REFRESH_EVERY_S = 300


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def start(session: Session, user: User, max_age_s: int) -> str:
    """A new session for ``user``; returns its id (for the cookie only)."""
    now = datetime.now(UTC)
    session.execute(delete(WebSession).where(WebSession.expires_at < now))
    session_id = secrets.token_urlsafe(32)
    session.add(
        WebSession(
            digest=_digest(session_id),
            user_id=user.id,
            created_at=now,
            expires_at=now + timedelta(seconds=max_age_s),
        )
    )
    return session_id


def is_live(session: Session, session_id: object, user: User, max_age_s: int) -> bool:
    """Whether the cookie's session id names a live session of ``user`` (and keep it live)."""
    if not isinstance(session_id, str) or not session_id:
        return False
    row = session.get(WebSession, _digest(session_id))
    now = datetime.now(UTC)
    if row is None or row.user_id != user.id or row.expires_at <= now:
        return False
    renewed = now + timedelta(seconds=max_age_s)
    if renewed - row.expires_at > timedelta(seconds=REFRESH_EVERY_S):
        row.expires_at = renewed
    return True


def password_version(user: User) -> str:
    """Changes when the user's password changes: kept in a session when it starts, a session
    with another version has ended (a password change signs out the other sessions)."""
    return (user.password_hash or "")[-16:]


def signed_in_user(session: Session, data: Mapping[str, Any], max_age_s: int) -> User | None:
    """The user a signed session's data names (``uid``, ``sid``, ``pwv``: the web session
    cookie, or a service's access cookie made from it), if that session is still live: the
    account enabled, the password unchanged, not signed out."""
    user_id = data.get("uid")
    user = session.get(User, user_id) if isinstance(user_id, int) else None
    if (
        user is None
        or user.disabled
        or data.get("pwv") != password_version(user)
        or not is_live(session, data.get("sid"), user, max_age_s)
    ):
        return None
    return user


def end(session: Session, session_id: object) -> None:
    """Sign out: the session's cookie, and every copy of it, stop working."""
    if isinstance(session_id, str) and session_id:
        session.execute(delete(WebSession).where(WebSession.digest == _digest(session_id)))
