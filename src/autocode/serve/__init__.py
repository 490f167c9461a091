"""The autocode prediction API (FastAPI): ``create_app(Settings())``, or from a shell
``python -m autocode.serve --model models:/<name>@<alias>``. See ``docs/autocode-api.md``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from autocode.serve.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI


def create_app(
    settings: Settings | None = None, *, s3_client_factory: Callable[[], Any] | None = None
) -> FastAPI:
    """`autocode.serve.app.create_app`, imported on first use (it pulls FastAPI and MLflow)."""
    from autocode.serve.app import create_app as _create_app

    return _create_app(settings, s3_client_factory=s3_client_factory)


__all__ = ["Settings", "create_app"]
