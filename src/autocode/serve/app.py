"""The prediction API: `create_app(settings)` builds the FastAPI application.

Routes: ``GET /predict``, ``POST /predict``, ``GET /nomenclature/{code}``, ``GET /model``
(authenticated), ``GET /health``, ``GET /ready``, ``GET /metrics``, ``GET /`` and the OpenAPI
documents (``/openapi.json``, ``/docs``). See ``docs/autocode-api.md``.
"""

# No `from __future__ import annotations` here: FastAPI reads the routes' annotations at run
# time, and they refer to values local to create_app (the configured limits).
import asyncio
import contextlib
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response

from autocode.serve import schemas
from autocode.serve.auth import CHALLENGE, Authenticator, AuthError, Principal
from autocode.serve.batching import Batcher
from autocode.serve.loader import LoadedModel, ModelManager, make_source
from autocode.serve.metrics import HttpMiddleware, Metrics
from autocode.serve.predictor import Coded
from autocode.serve.settings import Settings
from autocode.serve.shipper import Shipper, s3_client
from autocode.serve.spool import SpoolError, SpoolWriter

log = logging.getLogger("autocode.serve")

SECURITY: list[dict[str, list[str]]] = [{"ApiKey": []}, {"Bearer": []}, {"Basic": []}]
SECURITY_SCHEMES = {
    "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "Bearer": {"type": "http", "scheme": "bearer", "description": "An API key as bearer token."},
    "Basic": {"type": "http", "scheme": "basic"},
}
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": schemas.ErrorBody, "description": "Missing, invalid or revoked credentials."},
    422: {"model": schemas.ValidationErrorBody, "description": "Invalid input; names the field."},
    503: {"model": schemas.ErrorBody, "description": "No model loaded yet, or log unavailable."},
}


class ConfigurationError(Exception):
    """The server cannot start with these settings; the message says what to fix."""


def _dumps(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


class JSONBytes(Response):
    media_type = "application/json"


class ApiState:
    """Everything the routes share: settings, auth, model manager, log writer and shipper."""

    def __init__(self, settings: Settings, s3_client_factory: Callable[[], Any] | None = None):
        self.settings = settings
        if not settings.has_credentials() and not settings.allow_anonymous:
            raise ConfigurationError(
                "no credentials configured: set AUTOCODE_API_API_KEYS_FILE (keys made with "
                "`python -m autocode.serve keys add`) and/or AUTOCODE_API_USERS_FILE, or "
                "AUTOCODE_API_ALLOW_ANONYMOUS=true for local development"
            )
        try:
            source = make_source(settings.model, settings.model_name)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        self.metrics = Metrics()
        env_user = None
        if settings.basic_username and settings.basic_password is not None:
            env_user = (settings.basic_username, settings.basic_password.get_secret_value())
        self.auth = Authenticator(
            settings.api_keys_file,
            settings.users_file,
            env_user=env_user,
            allow_anonymous=settings.allow_anonymous,
            cache_ttl_s=settings.auth_cache_ttl_s,
        )
        self.models = ModelManager(
            source,
            poll_interval_s=settings.poll_interval_s,
            retry_initial_s=settings.load_retry_initial_s,
            retry_max_s=settings.load_retry_max_s,
            observer=self.metrics,
        )
        self.writer: SpoolWriter | None = None
        if settings.log_enabled:
            self.writer = SpoolWriter(
                settings.log_dir,
                instance=settings.instance_id,
                fsync=settings.log_fsync,
                max_bytes=settings.log_segment_max_bytes,
                max_age_s=settings.log_segment_max_age_s,
                observer=self.metrics,
            )
        self.shipper: Shipper | None = None
        if settings.log_enabled and settings.log_s3_uri:
            self.shipper = Shipper(
                settings.log_dir,
                settings.log_s3_uri,
                client_factory=s3_client_factory or s3_client,
                interval_s=settings.log_ship_interval_s,
                retry_max_s=settings.log_ship_retry_max_s,
                keep_shipped_s=settings.log_keep_shipped_hours * 3600,
                observer=self.metrics,
            )
        self.batcher = Batcher(settings.batch_max_items)
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    # -- life cycle ---------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.shutdown()

    async def start(self) -> None:
        self.stop = asyncio.Event()
        if self.writer is not None:
            await asyncio.to_thread(self.writer.open)
            if self.writer.state.recovered:
                log.info(
                    "recovered %d spool segment(s) left open by the previous run",
                    len(self.writer.state.recovered),
                )
        self.batcher.start()
        self.tasks = [asyncio.create_task(self.models.run(self.stop), name="model-manager")]
        if self.shipper is not None:
            self.tasks.append(asyncio.create_task(self.shipper.run(self.stop), name="shipper"))
        log.info(
            "autocode API starting: model %s, prediction log %s",
            self.models.source,
            self._log_description(),
        )

    async def shutdown(self) -> None:
        # uvicorn has finished the requests in flight: nothing is queued for the model any more
        await self.batcher.stop()
        self.stop.set()
        for task in self.tasks:
            if task.get_name() == "model-manager":  # may be waiting for a download: drop it
                task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.writer is not None:
            await asyncio.to_thread(self.writer.close)
        if self.shipper is not None:
            await asyncio.to_thread(self.shipper.drain, self.settings.log_shutdown_ship_timeout_s)
        self.models.close()

    def _log_description(self) -> str:
        if self.writer is None:
            return "DISABLED"
        target = f", shipped to {self.settings.log_s3_uri}" if self.shipper else " (not shipped)"
        return f"spool {self.settings.log_dir}{target}"

    # -- helpers for the routes ---------------------------------------------------------------
    def model(self) -> LoadedModel:
        model = self.models.current
        if model is None:
            raise HTTPException(
                503, f"no model loaded yet: {self.models.status()}", headers={"Retry-After": "5"}
            )
        return model

    def threshold(self, model: LoadedModel) -> float:
        if self.settings.threshold is not None:
            return self.settings.threshold
        return model.predictor.model_threshold

    async def predict(
        self,
        request: Request,
        principal: Principal,
        model: LoadedModel,
        texts: Sequence[str],
        inputs: Sequence[Mapping[str, Any]],
        categorical: Mapping[str, Sequence[Any]] | None,
        k: int,
    ) -> tuple[list[str], list[Coded], float]:
        """Code ``texts``; make their records durable; return ids, results and threshold."""
        threshold = self.threshold(model)
        coded = await self.batcher.predict(model.predictor, texts, categorical, k, threshold)
        started = request.scope.get("autocode.started") or time.perf_counter()
        latency_ms = round((time.perf_counter() - started) * 1000, 3)
        ids = [uuid.uuid4().hex for _ in texts]
        if self.writer is not None:
            now = datetime.now(UTC)
            date, ts = now.strftime("%Y-%m-%d"), now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            route = f"{request.method} /predict"
            client = principal.label()
            model_ref = model.short()
            size = len(texts)
            lines = []
            for index, (item_id, item, result) in enumerate(zip(ids, inputs, coded, strict=True)):
                record = {
                    "id": item_id,
                    "ts": ts,
                    "route": route,
                    "client": client,
                    "input": item,
                    "k": k,
                    "codes": result.codes,
                    "probabilities": [round(p, 6) for p in result.probabilities],
                    "ic": round(result.ic, 6),
                    "auto": result.auto,
                    "threshold": threshold,
                    "model": model_ref,
                    "latency_ms": latency_ms,
                    "batch": {"size": size, "index": index},
                }
                lines.append((date, _dumps(record) + b"\n"))
            try:
                await self.writer.append(lines)
            except SpoolError as exc:
                raise HTTPException(
                    503,
                    f"the prediction log is unavailable, so no prediction is served: {exc}",
                    headers={"Retry-After": "5"},
                ) from None
        self.metrics.observe_predictions(
            model.version, [c.ic for c in coded], [c.auto for c in coded]
        )
        return ids, coded, threshold

    @staticmethod
    def result_json(model: LoadedModel, item_id: str, coded: Coded, extra: str = "") -> str:
        """One prediction result as JSON text (see schemas.PredictionResult)."""
        predictions = model.predictor.candidates_json(coded)
        auto = "true" if coded.auto else "false"
        return (  # the id is hex: nothing to escape
            f'{{"id":"{item_id}","predictions":{predictions},"ic":{round(coded.ic, 6)!r},'
            f'"auto":{auto},"model":{model.json_ref}{extra}}}'
        )


def _version() -> str:
    """The installed project's version; "source" when run from a checkout via PYTHONPATH (the
    local recipe)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("datalab")
    except PackageNotFoundError:
        return "source"


def _finite(value: Any) -> Any:
    """``value`` with non-finite floats as None (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _validation_error(errors: list[dict[str, Any]]) -> RequestValidationError:
    return RequestValidationError(errors)


def _clean_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    out = []
    for error in errors:
        loc = [part if isinstance(part, int) else str(part) for part in error.get("loc", ())]
        message = str(error.get("msg", "")).removeprefix("Value error, ")
        out.append({"loc": loc, "msg": message, "type": str(error.get("type"))})
    return out


def _field_path(loc: Sequence[Any]) -> str:
    if len(loc) == 2 and loc[0] == "body" and isinstance(loc[1], int):  # JSON syntax error
        return f"body (character {loc[1]})"
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)
    return text or "request"


def create_app(
    settings: Settings | None = None, *, s3_client_factory: Callable[[], Any] | None = None
) -> FastAPI:
    """The API for ``settings`` (default: from the environment). Raises `ConfigurationError`."""
    settings = settings or Settings()  # type: ignore[call-arg]  # values from the environment
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
    _, request_model = schemas.request_models(
        settings.max_text_length, settings.max_batch_size, settings.max_k
    )

    # -- errors -------------------------------------------------------------------------------
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _clean_errors(exc.errors())
        message = "\n".join(f"{_field_path(e['loc'])}: {e['msg']}" for e in errors)
        return JSONResponse({"message": message, "detail": errors}, status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        incident = uuid.uuid4().hex[:12]
        log.exception("internal error %s on %s %s", incident, request.method, request.url.path)
        return JSONResponse({"detail": f"internal error (incident {incident})"}, status_code=500)

    # -- auth ---------------------------------------------------------------------------------
    async def authenticated(request: Request) -> Principal:
        try:
            return await state.auth.authenticate(request.headers)
        except AuthError as exc:
            raise HTTPException(401, str(exc), headers={"WWW-Authenticate": CHALLENGE}) from None

    Auth = Annotated[Principal, Depends(authenticated)]
    protected: dict[str, Any] = {"openapi_extra": {"security": SECURITY}, "responses": ERRORS}

    # -- public routes ------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def index(request: Request) -> dict[str, str]:
        root = request.scope.get("root_path", "")
        return {"name": "autocode API", "docs": f"{root}/docs", "openapi": f"{root}/openapi.json"}

    @app.get("/health", response_model=schemas.Health, tags=["operations"])
    async def health() -> Response:
        """Liveness: the server answers, and its prediction log writer is running."""
        if state.writer is not None and not state.writer.alive:
            return JSONResponse({"status": "prediction log writer stopped"}, status_code=503)
        return JSONBytes(b'{"status":"ok"}')

    @app.get(
        "/ready",
        response_model=schemas.Readiness,
        responses={503: {"model": schemas.Readiness, "description": "Not ready (reason given)."}},
        tags=["operations"],
    )
    async def ready() -> Response:
        """Readiness: a model is loaded and the prediction log can be written."""
        model = state.models.current
        reason = state.models.status()
        ok = model is not None
        if ok and state.writer is not None and not state.writer.state.healthy:
            ok, reason = False, f"prediction log failing: {state.writer.state.last_error}"
        body = {"ready": ok, "reason": reason, "model": model.short() if model else None}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus metrics."}},
        tags=["operations"],
    )
    async def metrics(request: Request) -> Response:
        """Prometheus metrics (text format)."""
        if settings.metrics_require_auth:
            await authenticated(request)
        if state.shipper is not None:
            state.metrics.spool_pending(*state.shipper.pending())
        return Response(state.metrics.render(), media_type=state.metrics.content_type)

    # -- predictions --------------------------------------------------------------------------
    @app.get("/predict", response_model=schemas.SinglePrediction, tags=["predictions"], **protected)
    async def predict_one(
        request: Request,
        principal: Auth,
        text: Annotated[
            str,
            Query(
                max_length=settings.max_text_length,
                description="The activity description. The model's categorical variables may "
                "be given as further query parameters (names: GET /model).",
            ),
        ],
        k: Annotated[int | None, Query(ge=1, le=settings.max_k)] = None,
    ) -> Response:
        """Code one description (query parameters)."""
        model = state.model()
        errors = []
        if not text.strip():
            errors.append(
                {
                    "loc": ["query", "text"],
                    "msg": "must not be empty or blank",
                    "type": "value_error",
                }
            )
        extras = {
            key: value for key, value in request.query_params.items() if key not in ("text", "k")
        }
        errors += _categorical_errors(model, settings, ["query"], extras)
        if errors:
            raise _validation_error(errors)
        item: dict[str, Any] = {"text": text, **extras}
        categorical = _categorical_columns(model, settings, [extras])
        k = k or settings.default_k
        ids, coded, threshold = await state.predict(
            request, principal, model, [text], [item], categorical, k
        )
        body = state.result_json(model, ids[0], coded[0], f',"threshold":{threshold!r}')
        return JSONBytes(body.encode())

    @app.post("/predict", response_model=schemas.BatchPrediction, tags=["predictions"], **protected)
    async def predict_batch(
        request: Request,
        principal: Auth,
        payload: request_model,  # type: ignore[valid-type]  # built for these settings
    ) -> Response:
        """Code a batch of descriptions, each with optional categorical variables."""
        model = state.model()
        items = payload.items  # type: ignore[attr-defined]
        extras = [dict(item.__pydantic_extra__ or {}) for item in items]
        errors: list[dict[str, Any]] = []
        for index, fields in enumerate(extras):
            errors += _categorical_errors(model, settings, ["body", "items", index], fields)
            if len(errors) >= 50:
                break
        if errors:
            raise _validation_error(errors)
        texts = [item.text for item in items]
        inputs = [{"text": item.text, **fields} for item, fields in zip(items, extras, strict=True)]
        categorical = _categorical_columns(model, settings, extras)
        k = payload.k or settings.default_k  # type: ignore[attr-defined]
        ids, coded, threshold = await state.predict(
            request, principal, model, texts, inputs, categorical, k
        )
        results = ",".join(state.result_json(model, i, c) for i, c in zip(ids, coded, strict=True))
        body = (
            f'{{"model":{model.json_ref},"threshold":{threshold!r},"k":{k},"results":[{results}]}}'
        )
        return JSONBytes(body.encode())

    # -- the nomenclature and the model -------------------------------------------------------
    @app.get(
        "/nomenclature/{code}",
        response_model=schemas.NomenclatureEntry,
        tags=["nomenclature"],
        **protected,
    )
    async def nomenclature_entry(
        principal: Auth,
        code: Annotated[
            str,
            Path(
                max_length=32, description="A code, in any usual format (01.11Z, 0111Z, 01.1, A)."
            ),
        ],
    ) -> Response:
        """A code of the model's nomenclature: its label, ancestors and children."""
        model = state.model()
        nomenclature = model.coder.nomenclature
        found = nomenclature.find(code)
        if found is None:
            raise HTTPException(
                404, f"{code!r} is not a code of {nomenclature.name} {nomenclature.version}"
            )

        def describe(c: str) -> dict[str, str]:
            n = nomenclature.nodes[c]
            return {"code": n.code, "level": n.level, "label": n.label}

        leaves = nomenclature.leaves_under(found)
        body = {
            **describe(found),
            "nomenclature": {"name": nomenclature.name, "version": nomenclature.version},
            "ancestors": [describe(c) for c in reversed(nomenclature.ancestors(found))],
            "children": [describe(c) for c in nomenclature.children(found)],
            "predictable": any(leaf in model.predictor.codes for leaf in leaves),
        }
        return JSONBytes(_dumps(body))

    @app.get("/model", response_model=schemas.ModelDescription, tags=["model"], **protected)
    async def model_description(principal: Auth) -> Response:
        """The model being served, its metrics (from its MLflow run) and what it accepts."""
        model = state.model()
        coder = model.coder
        predictor = model.predictor
        nomenclature = coder.nomenclature
        body = {
            "name": model.name,
            "version": model.version,
            "source": model.source_kind,
            "uri": model.uri,
            "requested": model.requested,
            "alias": model.alias,
            "run_id": model.run_id,
            "model_uuid": model.model_uuid,
            "loaded_at": model.loaded_at,
            "load_seconds": round(model.load_seconds, 3),
            "threshold": state.threshold(model),
            "model_threshold": predictor.model_threshold,
            "default_k": settings.default_k,
            "max_k": settings.max_k,
            "classes": predictor.n_classes,
            "nomenclature": {
                "name": nomenclature.name,
                "version": nomenclature.version,
                "levels": list(nomenclature.levels),
            },
            "categorical": {
                name: sorted(values) if values is not None else None
                for name, values in predictor.vocabularies.items()
            },
            "text_column": predictor.text_column,
            "metrics": {k: v for k, v in model.metrics.items() if math.isfinite(v)},
            "params": model.params,
            "tags": model.tags,
            "info": _finite(coder.info or {}),
            "registry": model.registry,
        }
        return JSONBytes(_dumps(body))

    # -- OpenAPI: declare the security schemes ------------------------------------------------
    def openapi() -> dict[str, Any]:
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

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _categorical_errors(
    model: LoadedModel, settings: Settings, where: list[Any], fields: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """422 details for unknown categorical variables and (with ``reject``) unknown values."""
    predictor = model.predictor
    errors = []
    for name, value in fields.items():
        loc = [*where, name]
        if name not in predictor.categorical:
            known = ", ".join(predictor.categorical) or "none"
            errors.append(
                {
                    "loc": loc,
                    "type": "extra_forbidden",
                    "msg": f"unknown field; this model's categorical variables: {known}",
                }
            )
        elif settings.unknown_categorical == "reject" and predictor.unknown_value(name, value):
            values = sorted(predictor.vocabularies.get(name) or [])
            shown = ", ".join(values[:20]) + (", ..." if len(values) > 20 else "")
            errors.append(
                {
                    "loc": loc,
                    "type": "value_error",
                    "msg": f"unknown value {str(value)[:50]!r}; known values: {shown}",
                }
            )
    return errors


def _categorical_columns(
    model: LoadedModel, settings: Settings, extras: Sequence[Mapping[str, Any]]
) -> dict[str, list[Any]] | None:
    predictor = model.predictor
    if not predictor.categorical:
        return None
    columns: dict[str, list[Any]] = {}
    for name in predictor.categorical:
        values = [fields.get(name) for fields in extras]
        if settings.unknown_categorical == "ignore":
            values = [
                None if v is not None and predictor.unknown_value(name, v) else v for v in values
            ]
        columns[name] = values
    return columns
