"""The FastAPI application: API routers, error handling, sessions, request limits."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import datalab
from datalab.errors import DatalabError, TooManyRequests
from datalab.http.localize import localize, localize_details
from datalab.platform import Platform
from datalab.web.i18n import negotiate

log = logging.getLogger(__name__)

SESSION_COOKIE = "datalab_session"


def error_response(
    status: int, code: str, message: str, details: Any = None, *, lang: str = "en"
) -> JSONResponse:
    """The API's error body; ``message`` (and the details' messages) in ``lang``."""
    body: dict[str, Any] = {"code": code, "message": localize(message, lang)}
    if details is not None:
        body["details"] = localize_details(details, lang)
    return JSONResponse(
        {"error": body},
        status_code=status,
        headers={"Content-Language": lang, "Vary": "Accept-Language"},
    )


def _language(request: Request) -> str:
    """The error messages' language: the request's Accept-Language (the web UI sends its
    page language), English by default."""
    return negotiate(request.headers.get("accept-language"))


def _describe_validation(exc: RequestValidationError) -> tuple[str, list[dict[str, Any]]]:
    details = []
    for error in exc.errors():
        location = ".".join(str(p) for p in error["loc"] if p != "body") or "body"
        details.append({"field": location, "problem": error["msg"]})
    summary = "; ".join(f"{d['field']}: {d['problem']}" for d in details)
    return f"invalid request: {summary}", details


class BodySizeLimit:
    """Refuse request bodies over ``max_bytes`` (413), whether or not Content-Length is sent.

    A body without Content-Length (chunked) is read up to the limit before the app runs, then
    replayed to it: an error raised while the app reads the body would surface inside its body
    parser, which answers any failure with a 400."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/api/storage/buckets/"):
            # storage uploads stream to S3 under their own limit (storage.max_upload_bytes);
            # services' traffic never comes here (the gateway, outside, streams it to them)
            await self.app(scope, receive, send)
            return
        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if length is not None and length.isdigit():
            if int(length) > self.max_bytes:
                await self._reject(scope, receive, send)
            else:  # the server delivers exactly that many bytes
                await self.app(scope, receive, send)
            return
        buffered: list[Message] = []
        received = 0
        while True:
            message = await receive()
            buffered.append(message)
            if message["type"] != "http.request":  # the client left
                break
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                await self._reject(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        replay = iter(buffered)

        async def replaying_receive() -> Message:
            return next(replay, None) or await receive()

        await self.app(scope, replaying_receive, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413,
            "payload_too_large",
            f"request body is larger than the {self.max_bytes} bytes this server accepts "
            "(server.max_request_bytes)",
        )
        await response(scope, receive, send)


def create_app(platform: Platform, *, manage_lifecycle: bool = True) -> FastAPI:
    """Build the app around a platform. With ``manage_lifecycle`` the app starts and stops the
    platform (catalog refresh, backend, service watcher) with its own lifespan."""

    from datalab.gateway import ServiceGateway

    gateway = ServiceGateway(platform, session_cookie=SESSION_COOKIE)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if manage_lifecycle:
            await platform.start()
        try:
            yield
        finally:
            await gateway.aclose()
            if manage_lifecycle:
                await platform.stop()

    app = FastAPI(
        title=f"{platform.settings.instance_name} API",
        version=datalab.__version__,
        description="Launch data-science services from a catalog of Helm charts; every action "
        "answers with its equivalent command line. Authenticate with an API token "
        "(`Authorization: Bearer ...`, see `datalab login`) or a web session.",
        openapi_url="/api/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.platform = platform
    app.state.gateway = gateway

    @app.exception_handler(DatalabError)
    async def _datalab_error(request: Request, exc: DatalabError) -> JSONResponse:
        response = error_response(
            exc.status, exc.code, exc.message, exc.details, lang=_language(request)
        )
        if isinstance(exc, TooManyRequests):
            response.headers["Retry-After"] = str(int(exc.retry_after) + 1)
        if exc.status == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, details = _describe_validation(exc)
        return error_response(422, "invalid", message, details, lang=_language(request))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}.get(
            exc.status_code, "http_error"
        )
        message = str(exc.detail)
        if exc.status_code == 400:  # FastAPI could not read the body (e.g. not UTF-8)
            message = f"{message}: send JSON encoded in UTF-8 (Content-Type: application/json)"
        if exc.status_code == 404:
            message = f"no route {request.url.path}; the API is described at /api/docs"
        return error_response(exc.status_code, code, message, lang=_language(request))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(
            500,
            "internal",
            "internal error; the server log has the details (no data was changed)",
            lang=_language(request),
        )

    from datalab.api import admin, auth, catalogs, envs, health, me, services

    for module in (health, auth, me, admin, catalogs, services, envs):
        app.include_router(module.router)
    from datalab.api import audit, oidc, secrets, storage, wellknown
    from datalab.audit import AuditMiddleware

    for module in (storage, secrets, audit, oidc, wellknown):
        app.include_router(module.router)
    # inside the session middleware (added below), so it sees who is signed in
    app.add_middleware(AuditMiddleware, db=platform.db, region=platform.settings.region)
    from datalab.api import saved_configs
    from datalab.web import mount_web

    app.include_router(saved_configs.router)

    mount_web(app)  # pages, /ui fragments, /static, security headers (CSP)

    app.add_middleware(
        SessionMiddleware,
        secret_key=platform.session_secret,
        session_cookie=SESSION_COOKIE,  # host-only: never sent to the services' hosts
        max_age=platform.settings.security.session_max_age_s,
        same_site="lax",
        https_only=platform.settings.secure_cookies,
    )
    app.add_middleware(BodySizeLimit, max_bytes=platform.settings.server.max_request_bytes)
    # outermost: services' hosts and /s/ never reach the platform's own pages and API
    app.add_middleware(ServiceHosts, gateway=gateway)
    return app


class ServiceHosts:
    """Requests to a service's host (and ``/s/``) go to the gateway, the rest to the app."""

    def __init__(self, app: ASGIApp, gateway: Any) -> None:
        self.dispatch = gateway.wrap(app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.dispatch(scope, receive, send)
