"""Local accounts, API tokens and projects, on a database session.

Each user has a personal project (``<region.user_prefix><name>``); shared projects
(``<region.project_prefix><slug>``) are managed by admins today and will be fed by OIDC groups
(``Project.source = "oidc-group"``) later.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from datalab.config import RegionSettings
from datalab.db import ApiToken, Membership, Project, ProviderToken, User, WebSession
from datalab.errors import Conflict, InvalidInput, NotFound, Unauthenticated
from datalab.identity.names import RESERVED_USER_NAMES, check_label
from datalab.identity.passwords import (
    check_password_strength,
    dummy_verify,
    generate_password,
    hash_password,
    verify_password,
)
from datalab.identity.tokens import new_token, token_digest

ADMIN_NAME = "admin"


def personal_project_id(region: RegionSettings, user_name: str) -> str:
    return f"{region.user_prefix}{user_name}"


def _check_password(password: str) -> None:
    if problem := check_password_strength(password):
        raise InvalidInput(problem)


def create_user(
    session: Session,
    region: RegionSettings,
    name: str,
    *,
    password: str | None = None,
    email: str | None = None,
    is_admin: bool = False,
) -> tuple[User, str]:
    """Create a user and their personal project. Returns the user and the password (generated
    when not given) so the caller can show it once."""
    check_label(name, "user name", max_length=63 - len(region.user_prefix))
    if name in RESERVED_USER_NAMES:
        raise InvalidInput(f"user name {name!r} is reserved; choose another")
    if session.scalar(select(User).where(User.name == name)) is not None:
        raise Conflict(f"user {name!r} already exists")
    password = password if password is not None else generate_password()
    _check_password(password)
    user = User(name=name, email=email, password_hash=hash_password(password), is_admin=is_admin)
    session.add(user)
    session.flush()
    project = Project(id=personal_project_id(region, name), name=name, personal_of=user.id)
    project.members.append(Membership(user_id=user.id, role="admin"))
    session.add(project)
    session.flush()
    return user, password


def ensure_admin(
    session: Session, region: RegionSettings, password: str | None = None
) -> str | None:
    """Create the first admin when no admin exists. Returns its password only when it was just
    created (to be printed once, never logged)."""
    if session.scalar(select(User).where(User.is_admin.is_(True)).limit(1)) is not None:
        return None
    _, created_password = create_user(session, region, ADMIN_NAME, password=password, is_admin=True)
    return created_password


def get_user(session: Session, name: str) -> User:
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        raise NotFound(f"no user named {name!r}")
    return user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.name)))


def set_disabled(session: Session, name: str, disabled: bool) -> User:
    """Disable (or enable) an account. A disabled account keeps nothing that works here: its
    API tokens are revoked, its web sessions ended (enabling it again revives neither) and the
    identity provider's tokens kept for it forgotten. What it holds elsewhere (Vault tokens,
    running services) is ended by :meth:`datalab.services.ServiceManager.disable_user`."""
    user = get_user(session, name)
    user.disabled = disabled
    if disabled:
        now = datetime.now(UTC)
        for token in user.tokens:
            if token.revoked_at is None:
                token.revoked_at = now
        session.execute(delete(WebSession).where(WebSession.user_id == user.id))
        session.execute(delete(ProviderToken).where(ProviderToken.user_id == user.id))
    return user


def reset_password(session: Session, name: str, password: str | None = None) -> str:
    user = get_user(session, name)
    password = password if password is not None else generate_password()
    _check_password(password)
    user.password_hash = hash_password(password)
    return password


def change_password(session: Session, user: User, current: str, new: str) -> None:
    if not verify_password(user.password_hash, current):
        raise InvalidInput("the current password is wrong")
    _check_password(new)
    user.password_hash = hash_password(new)


def authenticate(session: Session, name: str, password: str) -> User | None:
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        dummy_verify()
        return None
    if not verify_password(user.password_hash, password) or user.disabled:
        return None
    return user


# -- API tokens ---------------------------------------------------------------------------------


def create_token(
    session: Session, user: User, name: str, ttl_days: int | None
) -> tuple[ApiToken, str]:
    name = name.strip()
    if not name or len(name) > 100:
        raise InvalidInput("token name must have 1 to 100 characters")
    raw = new_token()
    expires = datetime.now(UTC) + timedelta(days=ttl_days) if ttl_days else None
    token = ApiToken(
        user_id=user.id, name=name, digest=token_digest(raw), prefix=raw[:10], expires_at=expires
    )
    session.add(token)
    session.flush()
    return token, raw


def list_tokens(session: Session, user: User) -> list[ApiToken]:
    return list(
        session.scalars(select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id))
    )


def revoke_token(session: Session, user: User, token_id: int) -> ApiToken:
    token = session.get(ApiToken, token_id)
    if token is None or token.user_id != user.id:
        raise NotFound(f"you have no API token with id {token_id}")
    if token.revoked_at is None:
        token.revoked_at = datetime.now(UTC)
    return token


def user_for_token(session: Session, raw: str) -> User:
    token = session.scalar(select(ApiToken).where(ApiToken.digest == token_digest(raw)))
    if token is None:
        raise Unauthenticated("unknown API token; create one with `datalab login`")
    now = datetime.now(UTC)
    if token.revoked_at is not None:
        raise Unauthenticated(
            f"API token {token.prefix}… was revoked; create a new one with `datalab login`"
        )
    if token.expires_at is not None and token.expires_at <= now:
        raise Unauthenticated(
            f"API token {token.prefix}… expired on {token.expires_at:%Y-%m-%d %H:%M} UTC; "
            "create a new one with `datalab login`"
        )
    if token.user.disabled:
        raise Unauthenticated("this account is disabled; ask an administrator")
    # record use at most once a minute: avoids a write on every request
    if token.last_used_at is None or now - token.last_used_at > timedelta(minutes=1):
        token.last_used_at = now
    return token.user


# -- projects -------------------------------------------------------------------------------------


def create_project(
    session: Session, region: RegionSettings, slug: str, name: str = "", *, creator: User
) -> Project:
    """Create a shared project whose creator is its first admin member (else nobody could act in
    it until they add themselves)."""
    check_label(slug, "project name", max_length=63 - len(region.project_prefix))
    project_id = f"{region.project_prefix}{slug}"
    if session.get(Project, project_id) is not None:
        raise Conflict(f"project {project_id!r} already exists")
    project = Project(id=project_id, name=name or slug)
    project.members.append(Membership(user_id=creator.id, role="admin"))
    session.add(project)
    session.flush()
    return project


def get_project(session: Session, project_id: str) -> Project:
    project = session.get(Project, project_id)
    if project is None:
        raise NotFound(f"no project {project_id!r}")
    return project


def project_password(session: Session, project_id: str) -> str:
    """The project's service password (Onyxia's ``servicePassword``, injected as
    ``project.password``): generated at its first use, then the same for every service of the
    project, so that they can reach each other (a database and its clients)."""
    project = get_project(session, project_id)
    if not project.service_password:
        project.service_password = generate_password()
        session.flush()
    return project.service_password


def list_projects(session: Session, user: User | None = None) -> list[Project]:
    query = select(Project).order_by(Project.id)
    if user is not None:
        query = query.join(Membership).where(Membership.user_id == user.id)
    return list(session.scalars(query))


def add_member(session: Session, project_id: str, user_name: str, role: str = "member") -> None:
    if role not in ("member", "admin"):
        raise InvalidInput(f"role must be 'member' or 'admin', not {role!r}")
    project = get_project(session, project_id)
    if project.personal_of is not None:
        raise InvalidInput(f"{project_id!r} is a personal project; members cannot be added")
    user = get_user(session, user_name)
    for membership in project.members:
        if membership.user_id == user.id:
            membership.role = role
            return
    project.members.append(Membership(user_id=user.id, role=role))


def remove_member(session: Session, project_id: str, user_name: str) -> None:
    project = get_project(session, project_id)
    user = get_user(session, user_name)
    for membership in list(project.members):
        if membership.user_id == user.id:
            project.members.remove(membership)
            return
    raise NotFound(f"{user_name!r} is not a member of {project_id!r}")


def membership_of(session: Session, user: User, project_id: str) -> Membership | None:
    return session.scalar(
        select(Membership).where(Membership.user_id == user.id, Membership.project_id == project_id)
    )
