"""What the API's routes share (`ApiState`): settings, authentication, the model manager, the
prediction log's writer and shipper, the batcher; its life cycle and the prediction step that
makes every record durable before an answer."""

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import Response

from autocode.model.base import one_blas_thread
from autocode.serve.auth import Authenticator, Principal
from autocode.serve.batching import Batcher
from autocode.serve.loader import LoadedModel, ModelManager, make_source
from autocode.serve.metrics import Metrics
from autocode.serve.predictor import Coded
from autocode.serve.settings import Settings
from autocode.serve.shipper import Shipper, s3_client
from autocode.serve.spool import SpoolError, SpoolWriter

log = logging.getLogger("autocode.serve")


class ConfigurationError(Exception):
    """The server cannot start with these settings; the message says what to fix."""


def dumps(data: Any) -> bytes:
    """Compact JSON bytes (UTF-8, no ASCII escaping). orjson: the prediction log encodes one
    record per description, and the standard library's encoder cost ~17 us of the event loop
    per record (a tenth of a prediction)."""
    try:
        return orjson.dumps(data)
    except orjson.JSONEncodeError:  # what orjson refuses (integers beyond 64 bits): as is
        return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


class JSONBytes(Response):
    """A response whose body is JSON the route already encoded."""

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
        self.batcher = Batcher(settings.batch_max_items, on_call=self.metrics.model_called)
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    # -- life cycle ---------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        await self.start()
        try:
            # for the server's life, not per model call: setting OpenBLAS's thread count
            # back after each call wakes its worker threads, which then spin
            with one_blas_thread():
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
                lines.append((date, dumps(record) + b"\n"))
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
