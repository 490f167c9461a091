"""Saved launch configurations: a user's named overrides for a chart, per project, to launch the
same service again from the web launcher (pre-filled) or the API.

Only the overrides are saved (what the user changed), never the resolved values: one-time
passwords, credentials and random names come fresh at each launch. Secret fields (passwords,
tokens, keys) are dropped before saving.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from pydantic import Field
from sqlalchemy import select

from datalab.api.responses import AUTHENTICATED
from datalab.db import SavedConfig
from datalab.http.deps import PlatformDep, PrincipalDep, SessionDep
from datalab.http.schemas import Model, RowId, SavedConfigOut
from datalab.http.views import config_out, list_configs
from datalab.identity.access import check_saved_config, saved_configs_sql
from datalab.masking import is_secret_field

router = APIRouter(
    prefix="/api/saved-configs", tags=["saved configurations"], responses=AUTHENTICATED
)


class NewSavedConfig(Model):
    name: str = Field(min_length=1, max_length=100, description="Name, unique per project.")
    catalog: str = Field("datalab", max_length=63)
    chart: str = Field(max_length=63)
    version: str | None = Field(None, max_length=63, description="None: the latest at launch.")
    values: dict[str, Any] = Field(default_factory=dict, description="Overrides, as JSON.")


def _without_secrets(values: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    properties = schema.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    for key, value in values.items():
        node = properties.get(key)
        node = node if isinstance(node, dict) else {}
        if isinstance(value, dict):
            inner = _without_secrets(value, node)
            if inner or not value:
                kept[key] = inner
        elif not is_secret_field(node, key):
            kept[key] = value
    return kept


@router.get("", summary="My saved launch configurations in the project")
def list_saved(caller: PrincipalDep, session: SessionDep) -> list[SavedConfigOut]:
    return [config_out(c) for c in list_configs(session, caller)]


@router.post("", summary="Save a launch configuration (replaces one of the same name)")
async def save(body: NewSavedConfig, caller: PrincipalDep, platform: PlatformDep) -> SavedConfigOut:
    # the same validation as a launch: unknown chart, bad or read-only values are refused
    chart, resolved = await platform.services.resolve(
        caller, body.catalog, body.chart, body.version, overrides=body.values
    )
    values = _without_secrets(body.values, resolved.schema)
    name = body.name.strip()
    with platform.db.session() as session:
        config = session.scalar(
            select(SavedConfig).where(saved_configs_sql(caller), SavedConfig.name == name)
        )
        if config is None:
            config = SavedConfig(owner_id=caller.user_id, project_id=caller.project_id, name=name)
            session.add(config)
        config.catalog_id, config.chart_name = body.catalog, chart.name
        config.chart_version, config.values = body.version, values
        session.flush()
        return config_out(config)


@router.delete("/{config_id}", summary="Delete a saved configuration", status_code=204)
def delete(config_id: RowId, caller: PrincipalDep, session: SessionDep) -> Response:
    session.delete(check_saved_config(caller, session.get(SavedConfig, config_id), config_id))
    return Response(status_code=204)
