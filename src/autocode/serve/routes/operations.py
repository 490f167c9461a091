"""Operations: the index, liveness (/health), readiness (/ready) and Prometheus metrics."""

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from autocode.serve import schemas
from autocode.serve.routes.common import api_state, authenticated

router = APIRouter()


@router.get("/", include_in_schema=False)
async def index(request: Request) -> dict[str, str]:
    root = request.scope.get("root_path", "")
    return {"name": "autocode API", "docs": f"{root}/docs", "openapi": f"{root}/openapi.json"}


@router.get("/health", response_model=schemas.Health, tags=["operations"])
async def health(request: Request) -> Response:
    """Liveness: the server answers, and its prediction log writer is running."""
    writer = api_state(request).writer
    if writer is not None and not writer.alive:
        return JSONResponse({"status": "prediction log writer stopped"}, status_code=503)
    return Response(b'{"status":"ok"}', media_type="application/json")


@router.get(
    "/ready",
    response_model=schemas.Readiness,
    responses={503: {"model": schemas.Readiness, "description": "Not ready (reason given)."}},
    tags=["operations"],
)
async def ready(request: Request) -> Response:
    """Readiness: a model is loaded and the prediction log can be written."""
    state = api_state(request)
    model = state.models.current
    reason = state.models.status()
    ok = model is not None
    if ok and state.writer is not None and not state.writer.state.healthy:
        ok, reason = False, f"prediction log failing: {state.writer.state.last_error}"
    body = {"ready": ok, "reason": reason, "model": model.short() if model else None}
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus metrics."}},
    tags=["operations"],
)
async def metrics(request: Request) -> Response:
    """Prometheus metrics (text format)."""
    state = api_state(request)
    if state.settings.metrics_require_auth:
        await authenticated(request)
    if state.shipper is not None:
        state.metrics.spool_pending(*state.shipper.pending())
    return Response(state.metrics.render(), media_type=state.metrics.content_type)
