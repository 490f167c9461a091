"""Each project's service password (Onyxia's servicePassword): generated at its first launch,
kept, the same for every service and member of the project, injected as project.password,
user.password and project.basic, as Onyxia's charts (databases, MLflow, pgAdmin...) read it."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from datalab.catalog.config import CatalogConfig
from datalab.config import Settings
from datalab.db import Project
from datalab.identity import accounts

from .catalog.conftest import write_chart
from .conftest import Env

pytestmark = pytest.mark.anyio


def _field(expression: str) -> dict[str, Any]:
    return {"type": "string", "x-onyxia": {"overwriteDefaultWith": expression}}


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    """The platform with one catalog: a database chart that reads the project password."""
    charts = tmp_path / "charts"
    write_chart(
        charts,
        "postgresql",
        schema={
            "type": "object",
            "properties": {
                "auth": {
                    "type": "object",
                    "properties": {
                        "password": _field("project.password"),
                        "userPassword": _field("{{user.password}}"),
                        "basic": _field("project.basic"),
                    },
                }
            },
        },
    )
    catalog = CatalogConfig(id="db", location=str(charts))
    return settings.model_copy(update={"catalogs": [catalog]})


async def _auth(api: Any, project: str | None = None) -> dict[str, str]:
    result = await api.call(
        "POST",
        "/api/services",
        json={
            "catalog": "db",
            "chart": "postgresql",
            "dry_run": True,
            "mask_secrets": False,
        },
        project=project,
    )
    auth: dict[str, str] = result["values"]["auth"]
    return auth


async def test_each_project_has_its_own_generated_password(env: Env) -> None:
    alice, bob = await env.user("alice"), await env.user("bob")
    with env.platform.db.session() as session:
        creator = accounts.get_user(session, "alice")
        accounts.create_project(session, env.platform.settings.region, "team", creator=creator)
        accounts.add_member(session, "project-team", "bob")
        assert session.get_one(Project, "project-team").service_password is None  # not before use

    personal = await _auth(alice)
    password = personal["password"]
    assert len(password) == 20 and password.isalnum()
    assert personal["userPassword"] == password  # as Onyxia: user.password is the same
    assert base64.b64decode(personal["basic"]).decode() == f"user-alice:{password}"
    assert (await _auth(alice))["password"] == password  # kept

    team = await _auth(alice, project="project-team")
    assert team["password"] != password
    assert (await _auth(bob, project="project-team"))["password"] == team["password"]
    assert (await _auth(bob))["password"] not in (password, team["password"])
    with env.platform.db.session() as session:
        assert session.get_one(Project, "project-team").service_password == team["password"]

    # the launch form's values too
    form = await alice.call("GET", "/api/catalogs/db/charts/postgresql/values")
    assert form["values"]["auth"]["password"] == password
