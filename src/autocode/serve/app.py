"""The prediction API: `create_app(settings)` builds the FastAPI application.

Routes: ``GET /predict``, ``POST /predict``, ``GET /nomenclature/{code}``, ``GET /model``
(authenticated), ``GET /health``, ``GET /ready``, ``GET /metrics``, ``GET /`` and the OpenAPI
documents (``/openapi.json``, ``/docs``). See ``docs/autocode-api.md``. The routes are in
`autocode.serve.routes`, what they share in `autocode.serve.state`.
"""

import logging
import uuid
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse

from autocode.serve.metrics import HttpMiddleware
from autocode.serve.routes import operations, predictions, reference
from autocode.serve.routes.common import SECURITY_SCHEMES, clean_errors, field_path
from autocode.serve.settings import Settings
from autocode.serve.state import ApiState, ConfigurationError

log = logging.getLogger("autocode.serve")

__all__ = ["ConfigurationError", "create_app"]


def _version() -> str:
    """The installed project's version; "source" when run from a checkout via PYTHONPATH (the
    local recipe)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("datalab")
    except PackageNotFoundError:
        return "source"


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    """422 with one line per problem naming the field, and FastAPI's details."""
    assert isinstance(exc, RequestValidationError)
    errors = clean_errors(exc.errors())
    message = "\n".join(f"{field_path(e['loc'])}: {e['msg']}" for e in errors)
    return JSONResponse({"message": message, "detail": errors}, status_code=422)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    """500 with an incident id the log has with the traceback; nothing else is disclosed."""
    incident = uuid.uuid4().hex[:12]
    log.exception("internal error %s on %s %s", incident, request.method, request.url.path)
    return JSONResponse({"detail": f"internal error (incident {incident})"}, status_code=500)


def create_app(
    settings: Settings | None = None, *, s3_client_factory: Callable[[], Any] | None = None
) -> FastAPI:
    """The API for ``settings`` (default: from the environment). Raises `ConfigurationError`."""
    settings = settings or Settings()  # values from the environment
    state = ApiState(settings, s3_client_factory)
    app = FastAPI(
        title="autocode API",
        version=_version(),
        summary="Codes business-activity descriptions into a hierarchical nomenclature.",
        description="Every prediction is recorded durably before it is answered. See "
        "docs/autocode-api.md for authentication, limits and the prediction log.",
        lifespan=state.lifespan,
        root_path=settings.root_path,
        max_body_size=settings.body_limit(),
    )
    app.state.api = state
    app.add_middleware(HttpMiddleware, metrics=state.metrics)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(Exception, _unexpected)
    app.include_router(operations.router)
    app.include_router(predictions.router_for(state))
    app.include_router(reference.router)

    def openapi() -> dict[str, Any]:
        """The OpenAPI document, with the security schemes the protected routes name."""
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
            )
            schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override
    return app
