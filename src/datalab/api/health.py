"""Liveness, without authentication."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

import datalab
from datalab.http.deps import PlatformDep

router = APIRouter(prefix="/api", tags=["health"])


class Health(BaseModel):
    status: str = Field(description="ok: the platform answers.")
    version: str = Field(description="The platform's version.")
    backend: str = Field(description="The execution backend (backend.name).")
    instance: str = Field(description="The instance's name (instance_name).")


@router.get("/health", summary="Liveness and version (no authentication)")
def health(platform: PlatformDep) -> Health:
    return Health(
        status="ok",
        version=datalab.__version__,
        backend=platform.backend.name,
        instance=platform.settings.instance_name,
    )
