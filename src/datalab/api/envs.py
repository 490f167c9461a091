"""Cached service environments of the local backend ("local images"): list and prune (admin)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from datalab.api.responses import AUTHENTICATED
from datalab.envs import EnvManager
from datalab.errors import InvalidInput
from datalab.http.deps import AdminDep, PlatformDep
from datalab.platform import Platform

router = APIRouter(prefix="/api/envs", tags=["envs"], responses=AUTHENTICATED)

MAX_AGE_DAYS = 36_500  # a century: any environment is younger (a longer timedelta overflows)


class EnvOut(BaseModel):
    key: str = Field(description="The environment's key (a hash of what it was built from).")
    packages: list[str] = Field(description="The packages, as the recipes asked for them.")
    python: str = Field(description="Its Python version.")
    size_mb: float = Field(description="Its size on disk, in MiB.")
    created_at: str | None = Field(description="When it was built (ISO 8601).")
    last_used: str | None = Field(description="When a service last used it (ISO 8601).")
    services: list[str] = Field(description="The services that use it.")


class Pruned(BaseModel):
    removed: list[str] = Field(description="The keys of the environments deleted.")


def _manager(platform: Platform) -> EnvManager:
    manager = platform.backend.environments()
    if manager is None:
        raise InvalidInput(
            f"the {platform.backend.name!r} backend builds no environments (the local one does)"
        )
    return manager


@router.get("", summary="Cached environments, most recently used first (admin)")
def list_envs(_: AdminDep, platform: PlatformDep) -> list[EnvOut]:
    return [
        EnvOut(
            key=info.key,
            packages=list(info.packages),
            python=info.python_version,
            size_mb=round(info.size_bytes / 2**20, 1),
            created_at=info.created_at.isoformat() if info.created_at else None,
            last_used=info.last_used.isoformat() if info.last_used else None,
            services=list(info.services),
        )
        for info in _manager(platform).list()
    ]


@router.post("/prune", summary="Delete environments no service uses (admin)")
def prune_envs(
    _: AdminDep,
    platform: PlatformDep,
    older_than_days: Annotated[
        float | None,
        Query(ge=0, le=MAX_AGE_DAYS, description="Only those unused for this long."),
    ] = None,
) -> Pruned:
    older_than = timedelta(days=older_than_days) if older_than_days is not None else None
    return Pruned(removed=_manager(platform).prune(older_than, keep_in_use=True))
