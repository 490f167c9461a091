"""The one place where access is decided.

It answers two questions, as Datasette's ``allowed`` and ``allowed_resources_sql`` do: *may this
principal do this to that resource?* (:func:`check_service`, :func:`may`,
:func:`check_saved_config`, :func:`may_use_space`, :func:`require_admin`) and *which resources
may this principal see?* (:func:`services_sql`, :func:`listed_services_sql`,
:func:`saved_configs_sql`, :func:`spaces`), the second as SQL conditions that listings put in
their queries, so that a listing never shows what a check would refuse. Handlers and the
service layer never compare owners, projects or roles themselves.

Every request is resolved to a :class:`Principal`: a user acting in one project (their personal
project unless they ask for another with the ``X-Datalab-Project`` header or ``project`` query
parameter, like Onyxia's ``ONYXIA-PROJECT``).

Rules for services:

- a service belongs to a project and an owner; it is invisible outside its project (404, so the
  existence of other people's services does not leak);
- in its project, the owner may do anything; other members may see and use (open, logs,
  events) a service only when it is shared, and may change it (suspend, resume, rename,
  delete) only if they are project admins;
- platform administrators may see and stop (suspend, delete) any service, from whatever project
  they act in: they must be able to stop what a disabled or abusive user runs. They may not use
  it (open it, read its logs), and see its values with secrets masked, like anyone but its
  owner. A project's listing shows them what it shows its members (every service of the
  platform is listed for them by ``GET /api/admin/services``);
- the credentials a service holds (the secrets in its values: S3 keys, Vault token, git
  token...) are its owner's: nobody else sees them (:func:`may_see_credentials`);
- a credential minted for a service (its S3 refresh token, its service token) stands only while
  the service exists, in the same project, with the same owner
  (:func:`service_credential_stands`).

Other resources:

- saved launch configurations are their owner's alone; a project lists its caller's own;
- object storage buckets and secret directories (*spaces*) are named after projects: a
  principal may use their personal project's and the one they act in;
- administration (users, projects, catalogs, environments, the audit log) needs a platform
  administrator account (:func:`require_admin`).
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, false, or_, true
from sqlalchemy.orm import Session

from datalab.db import Project, SavedConfig, Service, User
from datalab.errors import Forbidden, NotFound
from datalab.identity.accounts import get_project, membership_of


class Action(enum.StrEnum):
    VIEW = "view"  # status, values, events
    USE = "use"  # open through the proxy, read logs
    STOP = "stop"  # suspend, delete
    MANAGE = "manage"  # resume, rename, share


#: what platform administrators may do to any service
ADMIN_ACTIONS = frozenset({Action.VIEW, Action.STOP})
#: what members other than the owner may do to a shared service only as project admins
CHANGES = frozenset({Action.STOP, Action.MANAGE})


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


def require_admin(principal: Principal) -> None:
    """Administration needs a platform administrator account."""
    if not principal.is_admin:
        raise Forbidden("this action needs an administrator account")


# -- services -----------------------------------------------------------------------------------


def check_service(principal: Principal, service: Service | None, action: Action) -> Service:
    """Return the service if the principal may perform ``action`` on it, else raise (404 for
    what they may not see, 403 for what they see but may not change)."""
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
    if action in CHANGES and principal.project_role != "admin":
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


def services_sql(principal: Principal, action: Action) -> ColumnElement[bool]:
    """The services the principal may perform ``action`` on, as a condition on the
    ``services`` table: the rows for which :func:`check_service` passes."""
    if principal.is_admin and action in ADMIN_ACTIONS:
        return true()
    others: ColumnElement[bool] = Service.shared.is_(True)
    if action in CHANGES and principal.project_role != "admin":
        others = false()
    return and_(
        Service.project_id == principal.project_id,
        or_(Service.owner_id == principal.user_id, others),
    )


def listed_services_sql(principal: Principal) -> ColumnElement[bool]:
    """The services a project's listing shows the principal: those they may see as a member
    of the project they act in (an administrator's view of every service is not a listing of
    one project)."""
    return services_sql(dataclasses.replace(principal, is_admin=False), Action.VIEW)


def may_see_credentials(principal: Principal, service: Service) -> bool:
    """Whether the secrets in a service's values are shown to the principal: its owner only
    (sharing a service shares access to it, never its owner's credentials)."""
    return service.owner_id == principal.user_id


def service_credential_stands(user: User, service: Service | None, project_id: str) -> bool:
    """Whether a credential minted for a service of ``user`` in ``project_id`` (its S3 refresh
    token, its service token) still stands: the service exists, there, and is still theirs."""
    return service is not None and service.owner_id == user.id and service.project_id == project_id


# -- saved launch configurations --------------------------------------------------------------


def check_saved_config(
    principal: Principal, config: SavedConfig | None, config_id: int
) -> SavedConfig:
    """The saved configuration if it is the principal's (from whatever project), else 404."""
    if config is None or config.owner_id != principal.user_id:
        raise NotFound(f"you have no saved configuration with id {config_id}")
    return config


def saved_configs_sql(principal: Principal) -> ColumnElement[bool]:
    """The saved configurations listed to the principal: theirs, in the project they act in."""
    return and_(
        SavedConfig.owner_id == principal.user_id,
        SavedConfig.project_id == principal.project_id,
    )


# -- spaces: buckets and secret directories -----------------------------------------------------


def spaces(principal: Principal, personal_project: str) -> list[str]:
    """The projects whose bucket and secret directory the principal may use: their personal
    project's (``personal_project``) and the one they act in, sorted."""
    return sorted({personal_project, principal.project_id})


def may_use_space(principal: Principal, space: str, personal_project: str) -> bool:
    """Whether ``space`` (a bucket, a secret path's top directory) is one of :func:`spaces`."""
    return space in spaces(principal, personal_project)
