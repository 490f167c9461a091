"""The one place where access is decided.

Every request is resolved to a :class:`Principal`: a user acting in one project (their personal
project unless they ask for another with the ``X-Datalab-Project`` header or ``project`` query
parameter, like Onyxia's ``ONYXIA-PROJECT``). Every resource check goes through
:func:`check_service`; handlers never compare owners themselves.

Rules for services:
- a service belongs to a project and an owner; it is invisible outside its project (404, so the
  existence of other people's services does not leak);
- in its project, the owner may do anything; other members may see and use (open, logs,
  events) a service only when it is shared, and may change it (suspend, resume, rename,
  delete) only if they are project admins;
- platform administrators may see and stop (suspend, delete) any service, from whatever project
  they act in: they must be able to stop what a disabled or abusive user runs. They may not use
  it (open it, read its logs), and see its values with secrets masked, like anyone but its
  owner;
- the credentials a service holds (the secrets in its values: S3 keys, Vault token, git
  token...) are its owner's: nobody else sees them (:func:`may_see_credentials`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sqlalchemy.orm import Session

from datalab.db import Service, User
from datalab.errors import Forbidden, NotFound
from datalab.identity.accounts import get_project, membership_of


class Action(enum.StrEnum):
    VIEW = "view"  # status, values, events
    USE = "use"  # open through the proxy, read logs
    STOP = "stop"  # suspend, delete
    MANAGE = "manage"  # resume, rename, share


#: what platform administrators may do to any service
ADMIN_ACTIONS = frozenset({Action.VIEW, Action.STOP})


@dataclass(frozen=True)
class Principal:
    user_id: int
    name: str
    is_admin: bool
    project_id: str
    project_role: str  # "member" | "admin"
    via: str  # "token" | "session"


def principal_for(session: Session, user: User, project_id: str | None, via: str) -> Principal:
    """Resolve the project a user acts in, checking membership."""
    from datalab.db import Project

    if project_id is None:
        personal = session.query(Project).filter(Project.personal_of == user.id).one_or_none()
        if personal is None:  # only possible if the database was edited by hand
            raise NotFound(f"user {user.name!r} has no personal project")
        project_id = personal.id
    membership = membership_of(session, user, project_id)
    if membership is None:
        get_project(session, project_id)  # a 404 for a project that does not exist at all
        raise Forbidden(f"you are not a member of project {project_id!r}")
    return Principal(
        user_id=user.id,
        name=user.name,
        is_admin=user.is_admin,
        project_id=project_id,
        project_role=membership.role,
        via=via,
    )


def check_service(principal: Principal, service: Service | None, action: Action) -> Service:
    """Return the service if the principal may perform ``action`` on it, else raise."""
    if service is None:
        raise NotFound("no such service in this project")
    if principal.is_admin and action in ADMIN_ACTIONS:
        return service
    if service.project_id != principal.project_id:
        raise NotFound("no such service in this project")
    if service.owner_id == principal.user_id:
        return service
    if not service.shared:
        raise NotFound("no such service in this project")
    if action in (Action.STOP, Action.MANAGE) and principal.project_role != "admin":
        raise Forbidden(
            f"service {service.id!r} belongs to {service.owner.name!r}; only its owner or a "
            "project admin can change it"
        )
    return service


def may(principal: Principal, service: Service, action: Action) -> bool:
    """Whether :func:`check_service` lets the principal perform ``action`` on the service."""
    try:
        check_service(principal, service, action)
    except (NotFound, Forbidden):
        return False
    return True


def may_see_credentials(principal: Principal, service: Service) -> bool:
    """Whether the secrets in a service's values are shown to the principal: its owner only
    (sharing a service shares access to it, never its owner's credentials)."""
    return service.owner_id == principal.user_id


def require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise Forbidden("this action needs an administrator account")
