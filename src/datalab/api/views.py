"""Database rows to response bodies."""

from __future__ import annotations

from sqlalchemy.orm import Session

from datalab.api.schemas import ProjectOut, TokenOut, UserOut
from datalab.db import ApiToken, Project, User
from datalab.identity import accounts


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
