"""The access module's two answers agree: the rows its SQL conditions select are exactly those
its checks allow, for every kind of principal, service and action."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from datalab.db import Base, Membership, Project, SavedConfig, Service, User, make_engine
from datalab.errors import Forbidden, NotFound
from datalab.identity.access import (
    Action,
    Principal,
    check_saved_config,
    listed_services_sql,
    may,
    may_use_space,
    require_admin,
    saved_configs_sql,
    services_sql,
    spaces,
)

OWNER, OTHER = 1, 2
PROJECTS = ("project-team", "project-other")


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    engine = make_engine(f"sqlite:///{tmp_path / 'access.db'}")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        for user_id, name in ((OWNER, "owner"), (OTHER, "other")):
            session.add(User(id=user_id, name=name, password_hash="-"))
        for project in PROJECTS:
            session.add(Project(id=project, name=project))
        session.flush()
        for project, user_id in itertools.product(PROJECTS, (OWNER, OTHER)):
            session.add(Membership(project_id=project, user_id=user_id))
        for i, (project, owner, shared) in enumerate(
            itertools.product(PROJECTS, (OWNER, OTHER), (False, True))
        ):
            session.add(
                Service(
                    id=f"svc-{i}",
                    project_id=project,
                    owner_id=owner,
                    friendly_name="s",
                    catalog_id="datalab",
                    chart_name="c",
                    chart_version="1",
                    shared=shared,
                    values={},
                    overrides={},
                    phase="running",
                    backend_state={},
                )
            )
            session.add(
                SavedConfig(
                    owner_id=owner,
                    project_id=project,
                    name=f"config-{i}",
                    catalog_id="datalab",
                    chart_name="c",
                    values={},
                )
            )
        session.flush()
        yield session
        session.rollback()
    engine.dispose()


def principals() -> list[Principal]:
    return [
        Principal(OWNER, "owner", is_admin, project, role, "token")
        for is_admin, project, role in itertools.product(
            (False, True), PROJECTS, ("member", "admin")
        )
    ]


def test_services_sql_selects_exactly_what_check_service_allows(session: Session) -> None:
    rows = list(session.scalars(select(Service)))
    for principal, action in itertools.product(principals(), Action):
        selected = set(session.scalars(select(Service.id).where(services_sql(principal, action))))
        allowed = {row.id for row in rows if may(principal, row, action)}
        assert selected == allowed, (principal, action)


def test_a_listing_shows_what_members_of_the_project_see(session: Session) -> None:
    rows = list(session.scalars(select(Service)))
    for principal in principals():
        listed = set(session.scalars(select(Service.id).where(listed_services_sql(principal))))
        member = dataclasses.replace(principal, is_admin=False)
        assert listed == {row.id for row in rows if may(member, row, Action.VIEW)}
        assert all(row.project_id == principal.project_id for row in rows if row.id in listed)


def test_saved_configs_are_their_owners(session: Session) -> None:
    principal = principals()[0]
    listed = list(session.scalars(select(SavedConfig).where(saved_configs_sql(principal))))
    assert listed and {(c.owner_id, c.project_id) for c in listed} == {
        (OWNER, principal.project_id)
    }
    for config in session.scalars(select(SavedConfig)):
        if config.owner_id == OWNER:
            assert check_saved_config(principal, config, config.id) is config
        else:
            with pytest.raises(NotFound):
                check_saved_config(principal, config, config.id)
    with pytest.raises(NotFound):
        check_saved_config(principal, None, 12345)


def test_spaces_are_the_personal_and_the_current_project() -> None:
    principal = principals()[0]
    assert spaces(principal, "user-owner") == ["project-team", "user-owner"]
    assert may_use_space(principal, "user-owner", "user-owner")
    assert not may_use_space(principal, "project-other", "user-owner")


def test_administration_needs_an_administrator() -> None:
    member, admin = principals()[0], principals()[-1]
    require_admin(admin)
    with pytest.raises(Forbidden):
        require_admin(member)
