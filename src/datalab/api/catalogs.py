"""Catalogs and charts, and a chart's resolved schema and default values for the caller."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from datalab.api.responses import AUTHENTICATED
from datalab.catalog.chart import ChartPage
from datalab.catalog.sources import CatalogListing
from datalab.http.deps import AdminDep, PlatformDep, PrincipalDep

router = APIRouter(prefix="/api/catalogs", tags=["catalogs"], responses=AUTHENTICATED)


class ResolvedDefaults(BaseModel):
    """What a launch of the chart would run with when it changes nothing: the values with the
    caller's context injected, and the schema for a form."""

    catalog: str
    chart: str
    version: str
    values: dict[str, Any] = Field(description="The resolved values.")
    values_schema: dict[str, Any] = Field(
        alias="schema",
        description="The chart's values schema for a form, the caller's context injected "
        "(defaults, listEnum, sliders); {} when the chart has none.",
    )


@router.get("", summary="Catalogs and their charts")
def list_catalogs(_: PrincipalDep, platform: PlatformDep) -> list[CatalogListing]:
    return [catalog.listing() for catalog in platform.catalogs.catalogs()]


@router.post("/refresh", summary="Reload every catalog now (admin)")
async def refresh(_: AdminDep, platform: PlatformDep) -> list[CatalogListing]:
    await platform.catalogs.refresh()
    return [catalog.listing() for catalog in platform.catalogs.catalogs()]


@router.get("/{catalog_id}", summary="One catalog")
def get_catalog(catalog_id: str, _: PrincipalDep, platform: PlatformDep) -> CatalogListing:
    return platform.catalogs.catalog(catalog_id).listing()


@router.get("/{catalog_id}/charts/{chart}", summary="A chart (latest version unless ?version=)")
def get_chart(
    catalog_id: str,
    chart: str,
    _: PrincipalDep,
    platform: PlatformDep,
    version: str | None = None,
) -> ChartPage:
    return ChartPage.model_validate(platform.catalogs.get_chart(catalog_id, chart, version))


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
) -> ResolvedDefaults:
    found, resolved = await platform.services.resolve(caller, catalog_id, chart, version)
    return ResolvedDefaults(
        catalog=catalog_id,
        chart=found.name,
        version=found.version,
        values=resolved.values,
        schema=resolved.schema,
    )
