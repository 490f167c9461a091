"""Services: launch (with dry run), list, inspect, logs, events, suspend, resume, rename, share,
delete. Every answer carries the equivalent command lines."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, StreamingResponse
from pydantic import BaseModel, Field

from datalab import commands
from datalab.api.responses import WITH_STORES
from datalab.catalog.merge import merge_layers
from datalab.config import Quota
from datalab.errors import InvalidInput, Unauthenticated
from datalab.http.deps import PlatformDep, PrincipalDep
from datalab.http.schemas import Model, ServiceListed
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


Commands = dict[str, str]  # the equivalent commands: {"datalab": ..., "kubernetes": ...}


class EventOut(BaseModel):
    time: str = Field(description="When (ISO 8601).")
    type: str = Field(description="Normal or Warning, as in Kubernetes events.")
    reason: str = Field(description="A short CamelCase word: Building, Started, Ready...")
    message: str


class EventsOut(BaseModel):
    events: list[EventOut] = Field(description="Oldest first.")
    commands: Commands


class ServiceDeleted(BaseModel):
    deleted: str = Field(description="The id of the service deleted.")
    commands: Commands


class UsageOut(BaseModel):
    services: int = Field(description="Services running or starting.")
    cpu: float = Field(description="Sum of their CPU limits, in cores.")
    memory_mb: int = Field(description="Sum of their memory limits, in MiB.")


class QuotaOut(BaseModel):
    project: str
    usage: UsageOut
    limits: Quota


class _ServiceRecord(BaseModel):
    """A service as the platform records it."""

    id: str
    name: str = Field(description="Its friendly name.")
    catalog: str
    chart: str
    version: str = Field(description="The chart's version.")
    project: str
    owner: str
    shared: bool = Field(description="The project's members may use it.")
    created_at: str = Field(description="ISO 8601.")
    resources: dict[str, Any] = Field(
        description="cpu (cores) and memory_mb: its limits, counted against quotas."
    )
    phase: str = Field(description="building, starting, running, suspended, failed...")
    reason: str | None = Field(description="Why it failed, or what it waits for.")
    urls: list[str] = Field(description="Where users reach it.")


class ServiceOut(_ServiceRecord):
    """A service after a change: its record, what the backend says of it, the equivalent
    commands of the change (not after a rename or share)."""

    # what the backend says of it, when it knows it (absent otherwise)
    started_at: str | None = Field(None, description="When it started (ISO 8601).")
    ready_at: str | None = Field(None, description="When it became ready (ISO 8601).")
    password: str | None = Field(None, description="Its own password or token (from the chart).")
    notes: str = Field("", description="Post-install notes (Markdown), from the chart.")
    commands: Commands | None = None


class ServiceDetail(_ServiceRecord):
    """A service with its values (secrets masked for those who may not see them)."""

    values: dict[str, Any] = Field(description="The values it runs with.")
    overrides: dict[str, Any] = Field(description="What its launch changed of the defaults.")
    # what the backend says of it, when it knows it (absent otherwise)
    started_at: str | None = Field(None, description="When it started (ISO 8601).")
    ready_at: str | None = Field(None, description="When it became ready (ISO 8601).")
    password: str | None = Field(None, description="Its own password or token (from the chart).")
    notes: str = Field("", description="Post-install notes (Markdown), from the chart.")
    commands: dict[str, Commands] = Field(description="The equivalent commands, by action.")


class PreviewedService(BaseModel):
    id: str
    chart: str
    version: str


class LaunchPreview(BaseModel):
    """A dry-run launch: what would run, nothing started."""

    dry_run: Literal[True]
    service: PreviewedService
    values: dict[str, Any] = Field(description="The resolved values.")
    resources: dict[str, Any] = Field(description="cpu (cores) and memory_mb it would count.")
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
    result = await platform.services.launch(caller, request)
    if request.dry_run:
        return LaunchPreview.model_validate(result)
    return ServiceOut.model_validate(result)


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
        services=[ServiceListed.model_validate(service) for service in found],
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
    return ServiceDetail.model_validate(await platform.services.get(caller, service_id))


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
        events=[EventOut.model_validate(event) for event in found],
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
    return ServiceOut.model_validate(await platform.services.suspend(caller, service_id))


@router.post(
    "/services/{service_id}/resume",
    summary="Start again with the same values",
    response_model_exclude_unset=True,
)
async def resume(service_id: str, caller: PrincipalDep, platform: PlatformDep) -> ServiceOut:
    return ServiceOut.model_validate(await platform.services.resume(caller, service_id))


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
    updated = await platform.services.update(
        caller, service_id, friendly_name=body.name, shared=body.shared
    )
    return ServiceOut.model_validate(updated)


@router.delete("/services/{service_id}", summary="Stop and delete, with its data")
async def delete(service_id: str, caller: PrincipalDep, platform: PlatformDep) -> ServiceDeleted:
    return ServiceDeleted.model_validate(await platform.services.delete(caller, service_id))


@router.get("/quota", summary="Resources used and allowed in the project")
def quota(caller: PrincipalDep, platform: PlatformDep) -> QuotaOut:
    return QuotaOut.model_validate(platform.services.quota(caller))
