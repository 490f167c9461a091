"""Database rows to response bodies."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import select
from sqlalchemy.orm import Session

from datalab.db import ApiToken, Project, SavedConfig, User
from datalab.http.schemas import ProjectOut, SavedConfigOut, TokenOut, UserOut
from datalab.identity import accounts
from datalab.identity.access import Principal, saved_configs_sql


def token_out(token: ApiToken) -> TokenOut:
    return TokenOut(
        id=token.id,
        name=token.name,
        prefix=token.prefix,
        created_at=token.created_at,
        expires_at=token.expires_at,
        last_used_at=token.last_used_at,
        revoked_at=token.revoked_at,
    )


def user_out(user: User) -> UserOut:
    return UserOut(
        name=user.name,
        email=user.email,
        is_admin=user.is_admin,
        disabled=user.disabled,
        created_at=user.created_at,
    )


def project_out(project: Project, *, role: str | None = None, members: bool = False) -> ProjectOut:
    return ProjectOut(
        id=project.id,
        name=project.name,
        personal=project.personal_of is not None,
        role=role,
        members=[{"user": m.user.name, "role": m.role} for m in project.members]
        if members
        else None,
    )


def projects_of(session: Session, user: User, *, members: bool = False) -> list[ProjectOut]:
    """The user's projects, with their role in each."""
    result = []
    for project in accounts.list_projects(session, user):
        membership = accounts.membership_of(session, user, project.id)
        role = membership.role if membership else None
        result.append(project_out(project, role=role, members=members))
    return result


def launcher_url(config: SavedConfig) -> str:
    """The web launcher pre-filled with this configuration (the user still presses Launch)."""
    params: list[tuple[str, str]] = []
    if config.chart_version:
        params.append(("version", config.chart_version))
    for path, value in _leaves(config.values):
        params.append((path, value if isinstance(value, str) else json.dumps(value)))
    query = urlencode(params)
    return f"/launcher/{config.catalog_id}/{config.chart_name}" + (f"?{query}" if query else "")


def _leaves(values: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    found = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            found += _leaves(value, path + ".")
        else:
            found.append((path, value))
    return found


def config_out(config: SavedConfig) -> SavedConfigOut:
    return SavedConfigOut(
        id=config.id,
        name=config.name,
        project=config.project_id,
        catalog=config.catalog_id,
        chart=config.chart_name,
        version=config.chart_version,
        values=config.values,
        launcher_url=launcher_url(config),
        updated_at=config.updated_at.isoformat(),
    )


def list_configs(session: Any, principal: Principal) -> list[SavedConfig]:
    """The caller's saved configurations in the project they act in."""
    query = select(SavedConfig).where(saved_configs_sql(principal)).order_by(SavedConfig.name)
    return list(session.scalars(query))
