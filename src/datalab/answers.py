"""What the service layer (:mod:`datalab.services`) answers: services, their events, the
project's quota. The API declares these models as its responses and the web pages render them,
so that both show the same fields."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from datalab.config import Quota

Commands = dict[str, str]  # the equivalent commands: {"datalab": ..., "kubernetes": ...}


class EventOut(BaseModel):
    time: str = Field(description="When (ISO 8601).")
    type: str = Field(description="Normal or Warning, as in Kubernetes events.")
    reason: str = Field(description="A short CamelCase word: Building, Started, Ready...")
    message: str


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


class ServiceListed(BaseModel):
    """A service in a listing (from the platform's records only: fast for many services)."""

    id: str
    name: str = Field(description="Its friendly name.")
    chart: str
    version: str = Field(description="The chart's version.")
    owner: str
    shared: bool = Field(description="The project's members may use it.")
    phase: str = Field(description="building, starting, running, suspended, failed...")
    reason: str | None = Field(description="Why it failed, or what it waits for.")
    created_at: str = Field(description="ISO 8601.")


class ServiceResources(BaseModel):
    cpu: float = Field(description="Its CPU limit counted against quotas, in cores.")
    memory_mb: int = Field(description="Its memory limit counted against quotas, in MiB.")


class AdminServiceListed(BaseModel):
    """A service of any project, for administrators."""

    id: str
    name: str = Field(description="Its friendly name.")
    chart: str
    version: str = Field(description="The chart's version.")
    owner: str
    project: str
    shared: bool = Field(description="The project's members may use it.")
    phase: str = Field(description="building, starting, running, suspended, failed...")
    reason: str | None = Field(description="Why it failed, or what it waits for.")
    resources: ServiceResources
    created_at: str = Field(description="ISO 8601.")
