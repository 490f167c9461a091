"""Liveness, without authentication."""

from __future__ import annotations

from fastapi import APIRouter

import datalab
from datalab.http.deps import PlatformDep

router = APIRouter(prefix="/api", tags=["health"])


@router.get("/health", summary="Liveness and version (no authentication)")
def health(platform: PlatformDep) -> dict[str, str]:
    return {
        "status": "ok",
        "version": datalab.__version__,
        "backend": platform.backend.name,
        "instance": platform.settings.instance_name,
    }
