"""Services: launch (with dry run), list, inspect, logs, events, suspend, resume, rename, share,
delete. Every answer carries the equivalent command lines."""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, StreamingResponse
from pydantic import BaseModel, Field

from datalab import commands
from datalab.answers import (
    Commands,
    EventOut,
    LaunchPreview,
    QuotaOut,
    ServiceDeleted,
    ServiceDetail,
    ServiceListed,
    ServiceOut,
)
from datalab.api.responses import WITH_STORES
from datalab.catalog.merge import merge_layers
from datalab.errors import InvalidInput, Unauthenticated
from datalab.http.deps import PlatformDep, PrincipalDep
from datalab.http.schemas import Model
from datalab.services import LaunchRequest
from datalab.values import load_values_file, parse_set_args

router = APIRouter(prefix="/api", tags=["services"], responses=WITH_STORES)


class LaunchBody(Model):
    catalog: str = Field("datalab", description="Catalog id.")
    chart: str = Field(description="Chart name, e.g. 'jupyter-python'.")
    version: str | None = Field(None, description="Chart version (default: latest).")
    name: str | None = Field(
        None, description="Service id / release name (RFC 1123 label); generated when missing."
    )
    friendly_name: str | None = Field(None, max_length=255)
    values: dict[str, Any] = Field(default_factory=dict, description="Overrides, as JSON.")
    values_yaml: str | list[Annotated[str, Field(max_length=1_000_000)]] | None = Field(
        None,
        max_length=1_000_000,
        description="Overrides as values.yaml documents: one, or several merged in order as "
        "with helm -f a.yaml -f b.yaml.",
    )
    set: list[str] = Field(default_factory=list, description="Helm-style 'a.b=c' overrides.")
    shared: bool = Field(False, description="Share with the project's members.")
    dry_run: bool = Field(False, description="Resolve and validate only; start nothing.")
    mask_secrets: bool = Field(
        False,
        description="With dry_run: replace passwords, tokens and keys by ******** in the "
        "values and values YAML of the answer (for screens, e.g. the web launcher).",
    )


class EventsOut(BaseModel):
    events: list[EventOut] = Field(description="Oldest first.")
    commands: Commands


class ServiceList(BaseModel):
    project: str = Field(description="The caller's current project.")
    services: list[ServiceListed] = Field(description="Oldest first.")
    commands: Commands


class ServicePatch(Model):
    name: str | None = Field(None, max_length=255, description="New display name.")
    shared: bool | None = None


def overrides_of(body: LaunchBody) -> dict[str, Any]:
    """values files < JSON values < --set, as with helm's -f / --set precedence."""
    files = [body.values_yaml] if isinstance(body.values_yaml, str) else body.values_yaml or []
    layers = [
        load_values_file(text, source=f"values file {number}" if len(files) > 1 else "values_yaml")
        for number, text in enumerate(files, 1)
    ]
    layers.append(body.values)
    if body.set:
        layers.append(parse_set_args(body.set))
    return merge_layers(*layers)


@router.post(
    "/services",
    summary="Launch a service (or resolve only, with dry_run)",
    response_model_exclude_unset=True,
)
async def launch(
    body: LaunchBody, caller: PrincipalDep, platform: PlatformDep
) -> ServiceOut | LaunchPreview:
    request = LaunchRequest(
        catalog_id=body.catalog,
        chart=body.chart,
        version=body.version,
        name=body.name,
        friendly_name=body.friendly_name,
        overrides=overrides_of(body),
        shared=body.shared,
        dry_run=body.dry_run,
        mask_secrets=body.mask_secrets,
    )
    return await platform.services.launch(caller, request)


@router.get(
    "/launch-preview",
    summary="A dry-run launch as a read: resolved values (secrets masked) and equivalent commands",
)
async def launch_preview(
    caller: PrincipalDep,
    platform: PlatformDep,
    chart: str,
    catalog: str = "datalab",
    version: str | None = None,
    name: str | None = None,
    values: Annotated[
        str, Query(max_length=100_000, description="Overrides as a JSON object.")
    ] = "{}",
) -> LaunchPreview:
    """What the web launcher's command bar shows as the form changes. A GET, so that previews
    are not recorded as actions in the audit log; the answer is a ``dry_run`` launch's."""
    try:
        overrides = json.loads(values)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep
        raise InvalidInput(f"values must be a JSON object: {exc}") from None
    if not isinstance(overrides, dict):
        raise InvalidInput("values must be a JSON object of overrides")
    body = LaunchBody(
        catalog=catalog,
        chart=chart,
        version=version,
        name=name or None,
        values=overrides,
        dry_run=True,
        mask_secrets=True,
    )
    preview = await launch(body, caller, platform)
    if not isinstance(preview, LaunchPreview):  # a dry run answers a preview
        raise TypeError(f"a dry-run launch answered {type(preview).__name__}")
    return preview


@router.get("/services", summary="Services of the project visible to me")
async def list_services(caller: PrincipalDep, platform: PlatformDep) -> ServiceList:
    found = await platform.services.list(caller)
    return ServiceList(
        project=caller.project_id,
        services=found,
        commands=commands.for_listing(caller.project_id),
    )


@router.get(
    "/services/{service_id}",
    summary="A service: status, URLs, values",
    response_model_exclude_unset=True,
)
async def get_service(
    service_id: str, caller: PrincipalDep, platform: PlatformDep
) -> ServiceDetail:
    return await platform.services.get(caller, service_id)


@router.get(
    "/services/{service_id}/open",
    summary="Open a service in the browser: a redirect to its own origin, signed in",
    status_code=302,
    response_class=RedirectResponse,
    responses={302: {"description": "To the service's origin (or to the sign-in page)."}},
)
def open_service(
    request: Request,
    service_id: str,
    next: Annotated[str, Query(max_length=4096, description="Path to open on the service.")] = "/",
) -> RedirectResponse:
    """Each service has its own origin (``<id>.<region.domain>``); its host sends visitors here.
    A browser signed in to the platform who may use the service goes back with a one-time code
    that its host exchanges for an access cookie; one not signed in goes to the sign-in page
    first. Programs do not need this: they send their token to the service's URL."""
    gateway = request.app.state.gateway
    try:
        location = gateway.open_url(request.session, service_id, next)
    except Unauthenticated:
        here = f"/api/services/{service_id}/open?{urlencode({'next': next})}"
        location = "/login?" + urlencode({"next": here})
    return RedirectResponse(location, status_code=302)


@router.get("/services/{service_id}/events", summary="State transitions with timestamps")
async def events(service_id: str, caller: PrincipalDep, platform: PlatformDep) -> EventsOut:
    found = await platform.services.events(caller, service_id)
    return EventsOut(
        events=found,
        commands=commands.for_action("events", service_id, caller.project_id),
    )


@router.get(
    "/services/{service_id}/logs",
    summary="Log lines as text/plain; with follow=true the response streams new lines",
    response_class=StreamingResponse,
)
async def logs(
    service_id: str,
    caller: PrincipalDep,
    platform: PlatformDep,
    tail: Annotated[int, Query(ge=0, le=100_000)] = 200,
    follow: bool = False,
) -> StreamingResponse:
    lines = platform.services.logs(caller, service_id, tail=tail, follow=follow)

    async def body() -> Any:
        async for line in lines:
            yield line + "\n"

    return StreamingResponse(body(), media_type="text/plain; charset=utf-8")


@router.post(
    "/services/{service_id}/suspend",
    summary="Stop, keeping data and values",
    response_model_exclude_unset=True,
)
async def suspend(service_id: str, caller: PrincipalDep, platform: PlatformDep) -> ServiceOut:
    return await platform.services.suspend(caller, service_id)


@router.post(
    "/services/{service_id}/resume",
    summary="Start again with the same values",
    response_model_exclude_unset=True,
)
async def resume(service_id: str, caller: PrincipalDep, platform: PlatformDep) -> ServiceOut:
    return await platform.services.resume(caller, service_id)


@router.patch(
    "/services/{service_id}",
    summary="Rename or share (metadata only)",
    response_model_exclude_unset=True,
)
async def update(
    service_id: str, body: ServicePatch, caller: PrincipalDep, platform: PlatformDep
) -> ServiceOut:
    if body.name is None and body.shared is None:
        raise InvalidInput("nothing to change: send 'name' and/or 'shared'")
    return await platform.services.update(
        caller, service_id, friendly_name=body.name, shared=body.shared
    )


@router.delete("/services/{service_id}", summary="Stop and delete, with its data")
async def delete(service_id: str, caller: PrincipalDep, platform: PlatformDep) -> ServiceDeleted:
    return await platform.services.delete(caller, service_id)


@router.get("/quota", summary="Resources used and allowed in the project")
def quota(caller: PrincipalDep, platform: PlatformDep) -> QuotaOut:
    return platform.services.quota(caller)
