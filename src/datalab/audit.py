"""The append-only audit log: every state-changing request (who, project, action, target,
outcome, time, client IP), recorded by one ASGI middleware rather than in each handler.

The middleware sees every ``POST``/``PUT``/``PATCH``/``DELETE`` to the platform (not the traffic
of services, which the gateway sends them before it gets here), lets the request run, then
records it with the route that handled it (``services.launch``), the path parameters as the
target, and the outcome from the status code. The caller is identified from the same credentials
the request carried (API token digest or web session), read-only; a request with bad credentials
is recorded without a user. Request bodies are never recorded: they may hold passwords and
secret values.

The table refuses UPDATE and DELETE in the database itself (triggers, see migration 0004).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import Select, select
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from datalab.config import RegionSettings
from datalab.db import MAX_ROW_ID, ApiToken, AuditEntry, Database, User
from datalab.forwarded import client_address
from datalab.identity.accounts import personal_project_id
from datalab.identity.tokens import token_digest

log = logging.getLogger(__name__)

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
PROJECT_HEADER = b"x-datalab-project"


def outcome_of(status: int) -> str:
    if status < 400:
        return "success"
    if status in (401, 403):
        return "denied"
    return "failed"


def action_of(scope: Scope) -> str:
    """``<router module>.<handler>`` of the route that handled the request."""
    endpoint = scope.get("endpoint")
    if endpoint is None:
        return "unrouted"
    module = getattr(endpoint, "__module__", "").rsplit(".", 1)[-1]
    return f"{module}.{getattr(endpoint, '__name__', 'handler')}"


def target_of(scope: Scope) -> str:
    params = scope.get("path_params") or {}
    named = ",".join(f"{k}={v}" for k, v in sorted(params.items()))
    return (named or scope["path"])[:1024]


class AuditMiddleware:
    def __init__(self, app: ASGIApp, db: Database, region: RegionSettings) -> None:
        self.app = app
        self.db = db
        self.region = region

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in STATE_CHANGING:
            await self.app(scope, receive, send)
            return
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            try:
                await asyncio.to_thread(self._record, scope, status)
            except Exception:  # the action happened: a failed audit write must not hide it
                log.exception("could not write the audit log entry for %s", scope["path"])

    def _record(self, scope: Scope, status: int) -> None:
        headers = dict(scope.get("headers") or [])
        with self.db.session() as session:
            user = _caller(session, scope, headers)
            project = headers.get(PROJECT_HEADER, b"").decode(errors="replace") or None
            if project is None:
                query = scope.get("query_string", b"").decode(errors="replace")
                project = next(
                    (p.split("=", 1)[1] for p in query.split("&") if p.startswith("project=")),
                    None,
                )
            if project is None and user is not None:
                project = personal_project_id(self.region, user.name)
            session.add(
                AuditEntry(
                    user_name=user.name if user else None,
                    project_id=project[:63] if project else None,
                    action=action_of(scope)[:100],
                    target=target_of(scope),
                    outcome=outcome_of(status),
                    status=status,
                    method=scope["method"],
                    path=scope["path"][:2048],
                    client_ip=client_address(scope),
                )
            )


def _caller(session: Session, scope: Scope, headers: dict[bytes, bytes]) -> User | None:
    """Who the request's credentials name (read-only; validity was the handler's business)."""
    authorization = headers.get(b"authorization", b"").decode(errors="replace")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        token = session.scalar(
            select(ApiToken).where(ApiToken.digest == token_digest(credentials.strip()))
        )
        return token.user if token is not None else None
    user_id = (scope.get("session") or {}).get("uid")
    return session.get(User, user_id) if user_id is not None else None


class AuditEntryOut(BaseModel):
    id: int
    at: str = Field(description="When (ISO 8601, UTC).")
    user: str | None = Field(description="Who (None: not signed in).")
    project: str | None = Field(description="The caller's current project.")
    action: str = Field(description="What, e.g. services.launch.")
    target: str = Field(description="On what, e.g. a service id (may be empty).")
    outcome: str = Field(description="success, denied or failed.")
    status: int = Field(description="The HTTP status of the answer.")
    method: str
    path: str
    client_ip: str | None


def entry_out(entry: AuditEntry) -> AuditEntryOut:
    return AuditEntryOut(
        id=entry.id,
        at=entry.at.isoformat(),
        user=entry.user_name,
        project=entry.project_id,
        action=entry.action,
        target=entry.target,
        outcome=entry.outcome,
        status=entry.status,
        method=entry.method,
        path=entry.path,
        client_ip=entry.client_ip,
    )


@dataclass(frozen=True)
class Filters:
    user: str | None = None
    project: str | None = None
    action: str | None = None  # a prefix: "services" matches every services.* action
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def apply(self, statement: Select[Any]) -> Select[Any]:
        if self.user:
            statement = statement.where(AuditEntry.user_name == self.user)
        if self.project:
            statement = statement.where(AuditEntry.project_id == self.project)
        if self.action:
            statement = statement.where(AuditEntry.action.startswith(self.action, autoescape=True))
        if self.outcome:
            statement = statement.where(AuditEntry.outcome == self.outcome)
        if self.since:
            statement = statement.where(AuditEntry.at >= self.since)
        if self.until:
            statement = statement.where(AuditEntry.at < self.until)
        return statement


def query(
    session: Session, filters: Filters, *, before_id: int | None = None, limit: int = 100
) -> list[AuditEntry]:
    """Entries newest first; ``before_id`` pages backwards."""
    statement = filters.apply(select(AuditEntry)).order_by(AuditEntry.id.desc())
    if before_id is not None:
        # bounded to the ids rows can have (same answer): a larger integer overflows the
        # driver, and PostgreSQL's 32-bit ids the column (so not MAX_ROW_ID + 1 either)
        statement = statement.where(AuditEntry.id <= max(0, min(before_id - 1, MAX_ROW_ID)))
    return list(session.scalars(statement.limit(limit)))


def export_lines(db: Database, filters: Filters, batch: int = 1000) -> Iterator[str]:
    """Every matching entry as one JSON line, oldest first, read in batches (keyset)."""
    last_id = 0
    while True:
        with db.session() as session:
            statement = filters.apply(select(AuditEntry)).where(AuditEntry.id > last_id)
            rows = list(session.scalars(statement.order_by(AuditEntry.id).limit(batch)))
            lines = [json.dumps(entry_out(e).model_dump()) + "\n" for e in rows]
        yield from lines
        if len(rows) < batch:
            return
        last_id = rows[-1].id
