"""Prometheus metrics of the API (``GET /metrics``), in a registry of their own per app.

Every metric name starts with ``autocode_api_``; ``docs/autocode-api.md`` lists them.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
IC_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99, 1.0)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
AUTO_WINDOW = 1000


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        p = "autocode_api_"
        self.requests = Counter(
            p + "requests_total",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            p + "request_duration_seconds",
            "HTTP request latency by route template and method.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.predictions = Counter(
            p + "predictions_total",
            "Predictions (descriptions coded) by model version and automatic-coding decision.",
            ["model_version", "auto"],
            registry=r,
        )
        self.batch_size = Histogram(
            p + "batch_size",
            "Descriptions per prediction request.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.model_call_rows = Histogram(
            p + "model_call_rows",
            "Descriptions per model call: the dynamic batcher codes the rows of concurrent "
            "requests together.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.ic = Histogram(
            p + "prediction_ic",
            "Confidence index (p1 - p2) of the predictions.",
            buckets=IC_BUCKETS,
            registry=r,
        )
        self.auto_rate = Gauge(
            p + "auto_coding_rate",
            f"Share of the last {AUTO_WINDOW} predictions coded automatically (IC >= threshold).",
            registry=r,
        )
        self.model_info = Gauge(
            p + "model_info",
            "The model answering (value 1), by name, version and source.",
            ["name", "version", "source"],
            registry=r,
        )
        self.model_version = Gauge(
            p + "model_version",
            "Registry version number of the model answering (0 for a local directory).",
            registry=r,
        )
        self.model_loaded = Gauge(p + "model_loaded", "1 once a model is serving.", registry=r)
        self.model_loads = Counter(
            p + "model_loads_total",
            "Model load attempts by outcome (ok, error).",
            ["outcome"],
            registry=r,
        )
        self.model_load_seconds = Histogram(
            p + "model_load_seconds",
            "Time to download and load a model.",
            buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300),
            registry=r,
        )
        self.log_records = Counter(
            p + "log_records_total", "Prediction records made durable in the spool.", registry=r
        )
        self.log_commit_seconds = Histogram(
            p + "log_commit_seconds",
            "Time to write and fsync one group of records.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.log_group_requests = Histogram(
            p + "log_group_requests",
            "Requests sharing one fsync (group commit).",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.log_errors = Counter(
            p + "log_write_errors_total",
            "Failed spool writes (requests answered 503).",
            registry=r,
        )
        self.log_sealed = Counter(p + "log_segments_sealed_total", "Segments sealed.", registry=r)
        self.log_pending_segments = Gauge(
            p + "log_pending_segments", "Sealed segments waiting to be shipped.", registry=r
        )
        self.log_pending_bytes = Gauge(
            p + "log_pending_bytes", "Bytes of sealed segments waiting to be shipped.", registry=r
        )
        self.log_shipped_segments = Counter(
            p + "log_shipped_segments_total", "Segments shipped to S3.", registry=r
        )
        self.log_shipped_records = Counter(
            p + "log_shipped_records_total", "Records shipped to S3.", registry=r
        )
        self.log_ship_errors = Counter(
            p + "log_ship_errors_total", "Failed shipping attempts (retried).", registry=r
        )
        self._children: dict[tuple[str, ...], Any] = {}
        self._auto_window: collections.deque[bool] = collections.deque(maxlen=AUTO_WINDOW)
        self._auto_count = 0
        self._auto_lock = threading.Lock()

    def render(self) -> bytes:
        return generate_latest(self.registry)

    # -- HTTP ---------------------------------------------------------------------------------
    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, str(status))
        pair = self._children.get(key)
        if pair is None:
            pair = self._children[key] = (
                self.requests.labels(route, method, str(status)),
                self.latency.labels(route, method),
            )
        pair[0].inc()
        pair[1].observe(seconds)

    # -- predictions --------------------------------------------------------------------------
    def observe_predictions(self, version: str, ics: list[float], autos: list[bool]) -> None:
        n_auto = sum(autos)
        if n_auto:
            self.predictions.labels(version, "true").inc(n_auto)
        if len(autos) - n_auto:
            self.predictions.labels(version, "false").inc(len(autos) - n_auto)
        self.batch_size.observe(len(autos))
        for value in ics:
            self.ic.observe(value)
        with self._auto_lock:
            window = self._auto_window
            for decision in autos:
                if len(window) == window.maxlen:
                    self._auto_count -= window[0]
                window.append(decision)
                self._auto_count += decision
            self.auto_rate.set(self._auto_count / len(window) if window else 0.0)

    def model_called(self, rows: int) -> None:
        self.model_call_rows.observe(rows)

    def model_swapped(self, old: Any, new: Any) -> None:
        if old is not None:
            with contextlib.suppress(KeyError):
                self.model_info.remove(old.name, old.version, old.source_kind)
        self.model_info.labels(new.name, new.version, new.source_kind).set(1)
        self.model_version.set(float(new.version) if new.version.isdigit() else 0.0)
        self.model_loaded.set(1)

    # -- spool and shipping (observer protocols of spool.SpoolWriter and shipper.Shipper) -------
    def spool_committed(self, records: int, groups: int, seconds: float) -> None:
        self.log_records.inc(records)
        self.log_commit_seconds.observe(seconds)
        self.log_group_requests.observe(groups)

    def spool_failed(self) -> None:
        self.log_errors.inc()

    def spool_sealed(self) -> None:
        self.log_sealed.inc()

    def shipped(self, segments: int, records: int, size: int) -> None:
        self.log_shipped_segments.inc(segments)
        self.log_shipped_records.inc(records)

    def ship_failed(self) -> None:
        self.log_ship_errors.inc()

    def spool_pending(self, segments: int, size: int) -> None:
        self.log_pending_segments.set(segments)
        self.log_pending_bytes.set(size)


class HttpMiddleware:
    """Pure ASGI middleware (cheaper than Starlette's BaseHTTPMiddleware): request count and
    latency per route template (not per raw path: bounded label values), and the request's start
    time for the handlers (``scope["autocode.started"]``)."""

    def __init__(self, app: Any, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        scope["autocode.started"] = started
        status = 500

        async def send_wrapper(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "other"
            self.metrics.observe_request(
                template, scope["method"], status, time.perf_counter() - started
            )
