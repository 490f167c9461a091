"""Catalogs and charts, and a chart's resolved schema and default values for the caller."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from datalab.api.responses import AUTHENTICATED
from datalab.http.deps import AdminDep, PlatformDep, PrincipalDep

router = APIRouter(prefix="/api/catalogs", tags=["catalogs"], responses=AUTHENTICATED)


@router.get("", summary="Catalogs and their charts")
def list_catalogs(_: PrincipalDep, platform: PlatformDep) -> list[dict[str, Any]]:
    return [catalog.to_json() for catalog in platform.catalogs.catalogs()]


@router.post("/refresh", summary="Reload every catalog now (admin)")
async def refresh(_: AdminDep, platform: PlatformDep) -> list[dict[str, Any]]:
    await platform.catalogs.refresh()
    return [catalog.to_json() for catalog in platform.catalogs.catalogs()]


@router.get("/{catalog_id}", summary="One catalog")
def get_catalog(catalog_id: str, _: PrincipalDep, platform: PlatformDep) -> dict[str, Any]:
    return platform.catalogs.catalog(catalog_id).to_json()


@router.get("/{catalog_id}/charts/{chart}", summary="A chart (latest version unless ?version=)")
def get_chart(
    catalog_id: str,
    chart: str,
    _: PrincipalDep,
    platform: PlatformDep,
    version: str | None = None,
) -> dict[str, Any]:
    return platform.catalogs.get_chart(catalog_id, chart, version).to_json()


@router.get(
    "/{catalog_id}/charts/{chart}/values",
    summary="The chart's resolved schema and default values for the caller and project",
)
async def resolved_defaults(
    catalog_id: str,
    chart: str,
    caller: PrincipalDep,
    platform: PlatformDep,
    version: str | None = None,
) -> dict[str, Any]:
    found, resolved = await platform.services.resolve(caller, catalog_id, chart, version)
    return {
        "catalog": catalog_id,
        "chart": found.name,
        "version": found.version,
        "values": resolved.values,
        "schema": resolved.schema,
    }
