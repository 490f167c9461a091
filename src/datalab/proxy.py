"""The reverse proxy in front of services: ``/s/<service-id>/...`` -> the service's port.

It passes HTTP (request and response bodies streamed, with httpx) and WebSocket traffic (with
``websockets``) and knows nothing about users: the platform supplies ``resolve(connection,
service_id)``, which authorises the request (raising ``HTTPException(403/404)`` to deny) and
returns where the service listens (a :class:`Target`, i.e. :class:`datalab.backends.base.Endpoint`).

Headers: hop-by-hop headers (RFC 9110 section 7.6.1 and those named in ``Connection``) are
dropped both ways; ``Host`` is kept as the client sent it (JupyterLab compares it with
``Origin``); ``X-Forwarded-For``/``-Proto``/``-Host`` are set, and ``X-Forwarded-Prefix`` when
the prefix is stripped. The platform's own cookies can be withheld from services
(``drop_cookies``) so that a service never sees a user's platform session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from contextlib import asynccontextmanager
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import quote

import httpx
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from datalab.backends.base import Endpoint, ServiceNotFound

log = logging.getLogger(__name__)

Target = Endpoint
Resolver = Callable[[HTTPConnection, str], Awaitable[Target | None]]

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "expect",  # 100-continue is negotiated per hop; httpx does not speak it
    }
)
# Set by the WebSocket library itself on the upstream handshake.
WS_HANDSHAKE = frozenset(
    {
        "host",
        "origin",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "user-agent",
    }
)
_SERVICE_ID = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class ServiceProxy:
    """The ASGI app; mount it with :func:`mount_service_proxy`. Close it with :meth:`aclose`."""

    def __init__(
        self,
        resolve: Resolver,
        *,
        drop_cookies: Collection[str] = (),
        connect_timeout_s: float = 10.0,
    ) -> None:
        self.resolve = resolve
        self.drop_cookies = frozenset(drop_cookies)
        self.connect_timeout_s = connect_timeout_s
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                # no read timeout: long polls, event streams and big downloads are normal
                timeout=httpx.Timeout(None, connect=self.connect_timeout_s),
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=100),
                follow_redirects=False,
                trust_env=False,  # never send service traffic through an HTTP(S)_PROXY
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return
        rest = _mounted_path(scope)
        service_id = rest.split("/")[1] if rest.count("/") >= 1 else ""
        if not _SERVICE_ID.match(service_id):
            await _deny(scope, receive, send, 404, "unknown service")
            return
        if rest == f"/{service_id}" and scope["type"] == "http":  # the service lives under .../
            query = scope.get("query_string", b"").decode("latin-1")
            location = _mount_root(scope) + rest + "/" + (f"?{query}" if query else "")
            await _respond(send, 307, "", extra=[(b"location", location.encode("latin-1"))])
            return
        connection = HTTPConnection(scope, receive)
        try:
            target = await self.resolve(connection, service_id)
        except HTTPException as exc:
            await _deny(scope, receive, send, exc.status_code, exc.detail, exc.headers)
            return
        except (ServiceNotFound, LookupError):
            await _deny(scope, receive, send, 404, "unknown service")
            return
        except PermissionError:
            await _deny(scope, receive, send, 403, "forbidden")
            return
        if target is None:
            await _deny(scope, receive, send, 503, "the service is not running")
            return
        path = _upstream_path(scope, target)
        if scope["type"] == "http":
            await self._http(scope, receive, send, target, path)
        else:
            await self._websocket(scope, receive, send, target, path)

    # -- HTTP -----------------------------------------------------------------------------------

    async def _http(
        self, scope: Scope, receive: Receive, send: Send, target: Target, path: str
    ) -> None:
        headers = self._forward_headers(scope, target)
        has_body = any(
            name in (b"content-length", b"transfer-encoding") for name, _ in scope["headers"]
        )
        body = _RequestBody(receive) if has_body else None
        request = self.client.build_request(
            scope["method"],
            f"http://{target.host}:{target.port}{path}",
            headers=headers,
            content=body,
        )
        try:
            response = await self.client.send(request, stream=True)
        except httpx.TimeoutException:
            await _respond(send, 504, "the service did not answer in time")
            return
        except httpx.TransportError as exc:
            log.debug("proxy to %s:%s failed: %s", target.host, target.port, exc)
            await _respond(send, 502, "the service is not reachable (is it running?)")
            return
        try:
            pump = asyncio.create_task(_pump_response(response, send, target))
            # An endless response (event stream, long poll) must end when the client leaves:
            # watch for the disconnect once the request body no longer needs receive().
            watchers = [pump]
            if body is None or body.done:
                watchers.append(asyncio.create_task(_disconnected(receive)))
            try:
                await asyncio.wait(watchers, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in watchers:
                    task.cancel()
                results = await asyncio.gather(*watchers, return_exceptions=True)
            if isinstance(results[0], Exception) and not isinstance(results[0], OSError):
                raise results[0]  # OSError: the client went away mid-response
        finally:
            await response.aclose()

    def _forward_headers(self, scope: Scope, target: Target) -> list[tuple[bytes, bytes]]:
        raw: list[tuple[bytes, bytes]] = scope["headers"]
        connection_tokens = {
            token.strip().lower().encode("latin-1")
            for name, value in raw
            if name == b"connection"
            for token in value.decode("latin-1").split(",")
        }
        out: list[tuple[bytes, bytes]] = []
        forwarded_for = b""
        host = b""
        for name, value in raw:
            if name.decode("latin-1") in HOP_BY_HOP or name in connection_tokens:
                continue
            if name == b"x-forwarded-for":
                forwarded_for = value
                continue
            if name in (b"x-forwarded-proto", b"x-forwarded-host", b"x-forwarded-prefix"):
                continue  # set below from what this proxy saw; never trust the client's
            if name == b"host":
                host = value
            if name == b"cookie" and self.drop_cookies:
                value = _without_cookies(value, self.drop_cookies)
                if not value:
                    continue
            out.append((name, value))
        client = (scope.get("client") or ("", 0))[0].encode("latin-1")
        if client:
            forwarded_for = forwarded_for + b", " + client if forwarded_for else client
        if forwarded_for:
            out.append((b"x-forwarded-for", forwarded_for))
        scheme: str = scope.get("scheme") or "http"
        proto = {"ws": "http", "wss": "https"}.get(scheme, scheme)
        out.append((b"x-forwarded-proto", proto.encode("latin-1")))
        if host:
            out.append((b"x-forwarded-host", host))
        if target.strip_prefix:
            out.append((b"x-forwarded-prefix", target.prefix.encode("latin-1")))
        return out

    # -- WebSocket ------------------------------------------------------------------------------

    async def _websocket(
        self, scope: Scope, receive: Receive, send: Send, target: Target, path: str
    ) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        headers = self._forward_headers(scope, target)
        host = next((v.decode("latin-1") for n, v in scope["headers"] if n == b"host"), None)
        origin = next((v.decode("latin-1") for n, v in scope["headers"] if n == b"origin"), None)
        user_agent = next(
            (v.decode("latin-1") for n, v in scope["headers"] if n == b"user-agent"), None
        )
        extra = [
            (n.decode("latin-1"), v.decode("latin-1"))
            for n, v in headers
            if n.decode("latin-1") not in WS_HANDSHAKE
        ]
        try:
            upstream = await connect(
                f"ws://{target.host}:{target.port}{path}",
                additional_headers=extra,
                origin=origin,  # type: ignore[arg-type]
                user_agent_header=user_agent,
                subprotocols=scope.get("subprotocols") or None,
                compression=None,  # loopback: compressing costs CPU for nothing
                max_size=None,
                ping_interval=None,  # the client's own keep-alive passes through
                open_timeout=self.connect_timeout_s,
                close_timeout=2,  # a service that does not answer a close frame: drop it
                create_connection=_preserving_host(host),
                proxy=None,
            )
        except InvalidStatus as exc:
            await _deny(scope, receive, send, exc.response.status_code, "refused by the service")
            return
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            log.debug("websocket proxy to %s:%s failed: %s", target.host, target.port, exc)
            await send({"type": "websocket.close", "code": 1011})
            return
        async with upstream:
            await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol})
            await _relay(receive, send, upstream)


async def _relay(receive: Receive, send: Send, upstream: ClientConnection) -> None:
    """Pump frames both ways until either side closes; pass the close code on."""

    async def client_to_upstream() -> None:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                await upstream.close(_sendable(message.get("code", 1000)))
                return
            if message.get("text") is not None:
                await upstream.send(message["text"])
            elif message.get("bytes") is not None:
                await upstream.send(message["bytes"])

    async def upstream_to_client() -> None:
        try:
            async for data in upstream:
                if isinstance(data, str):
                    await send({"type": "websocket.send", "text": data})
                else:
                    await send({"type": "websocket.send", "bytes": data})
            code = upstream.close_code
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else 1011
        with contextlib.suppress(OSError, RuntimeError):  # the client may be gone already
            await send({"type": "websocket.close", "code": _sendable(code or 1000)})

    tasks = [asyncio.create_task(client_to_upstream()), asyncio.create_task(upstream_to_client())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, Exception) and not isinstance(result, ConnectionClosed | OSError):
            raise result


def _sendable(code: int) -> int:
    """1005/1006/1015 are reserved: they describe a close, they cannot be sent in one."""
    return 1000 if code in (1005, 1006, 1015) else code


def _preserving_host(host: str | None) -> type[ClientConnection]:
    """The upstream handshake carries the client's Host header instead of 127.0.0.1:port, as
    the HTTP path does (services compare Host and Origin to reject cross-site WebSockets)."""

    class PreservingHost(ClientConnection):
        async def handshake(self, *args: Any, **kwargs: Any) -> None:
            if host:
                build = self.protocol.connect

                def connect_with_host() -> Any:
                    request = build()
                    del request.headers["Host"]
                    request.headers["Host"] = host
                    return request

                self.protocol.connect = connect_with_host  # type: ignore[method-assign]
            await super().handshake(*args, **kwargs)

    return PreservingHost


# -- helpers ------------------------------------------------------------------------------------


class _RequestBody:
    """The client's request body as an async iterable for httpx, streamed as it arrives."""

    def __init__(self, receive: Receive) -> None:
        self.receive = receive
        self.done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while not self.done:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise OSError("client disconnected while sending the body")
            self.done = not message.get("more_body", False)
            if message.get("body"):
                yield message["body"]


async def _pump_response(response: httpx.Response, send: Send, target: Target) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": _response_headers(response.headers.raw, target),
        }
    )
    async for chunk in response.aiter_raw():
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _response_headers(raw: list[tuple[bytes, bytes]], target: Target) -> list[tuple[bytes, bytes]]:
    connection_tokens = {
        token.strip().lower().encode("latin-1")
        for name, value in raw
        if name.lower() == b"connection"
        for token in value.decode("latin-1").split(",")
    }
    out = []
    for name, value in raw:
        lower = name.lower()
        if lower.decode("latin-1") in HOP_BY_HOP or lower in connection_tokens:
            continue
        # an app unaware of its prefix redirects to /x: keep it under the prefix
        stripped = target.strip_prefix and value.startswith(b"/") and not value.startswith(b"//")
        if lower == b"location" and stripped:
            value = target.prefix.encode("latin-1") + value
        out.append((lower, value))
    return out


def _without_cookies(header: bytes, names: frozenset[str]) -> bytes:
    cookie: SimpleCookie = SimpleCookie()
    try:
        cookie.load(header.decode("latin-1"))
    except Exception:  # unparsable: forward nothing rather than leak the platform's cookie
        return b""
    kept = [f"{key}={morsel.coded_value}" for key, morsel in cookie.items() if key not in names]
    return "; ".join(kept).encode("latin-1")


def _mounted_path(scope: Scope) -> str:
    """The path below the mount point: ``/<service-id>/...``."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):  # Starlette >= 0.33 keeps the full path
        return path[len(root) :]
    return path


def _mount_root(scope: Scope) -> str:
    path: str = scope["path"]
    return path[: len(path) - len(_mounted_path(scope))]


def _upstream_path(scope: Scope, target: Target) -> str:
    """The path (and query) to request upstream, percent-encoded exactly as the client sent it."""
    raw: bytes | None = scope.get("raw_path")
    path = raw.decode("latin-1") if raw else quote(scope["path"])
    start = path.find(target.prefix + "/")
    if start < 0:
        start = path.find(target.prefix)
    path = path[start:] if start >= 0 else path
    if target.strip_prefix and path.startswith(target.prefix):
        path = path[len(target.prefix) :] or "/"
    query = scope.get("query_string", b"")
    return path + ("?" + query.decode("latin-1") if query else "")


async def _respond(
    send: Send, status: int, text: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = text.encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8")]
    headers += [(b"content-length", str(len(body)).encode())] + (extra or [])
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _deny(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    detail: str,
    headers: Mapping[str, str] | None = None,
) -> None:
    extra = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    if scope["type"] == "http":
        await _respond(send, status, detail, extra)
        return
    message: Message = await receive()  # websocket.connect
    if message["type"] != "websocket.connect":
        return
    if "websocket.http.response" in scope.get("extensions", {}):
        body = detail.encode()
        await send(
            {
                "type": "websocket.http.response.start",
                "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), *extra],
            }
        )
        await send({"type": "websocket.http.response.body", "body": body})
    else:  # the server answers 403 to a close before accept
        await send({"type": "websocket.close", "code": 1008})


def mount_service_proxy(
    app: Any,
    resolve: Resolver,
    path_prefix: str = "/s",
    *,
    drop_cookies: Collection[str] = (),
) -> ServiceProxy:
    """Serve ``<path_prefix>/<service-id>/...`` of a Starlette/FastAPI ``app`` through the proxy.

    The app's middleware (sessions, authentication) runs first, so ``resolve`` can use it. The
    proxy's connection pool is closed when the app's lifespan ends (or call ``aclose()``).
    """
    proxy = ServiceProxy(resolve, drop_cookies=drop_cookies)
    app.mount("/" + path_prefix.strip("/"), proxy)
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app_: ASGIApp) -> AsyncIterator[Any]:
        async with inner(app_) as state:
            try:
                yield state
            finally:
                await proxy.aclose()

    app.router.lifespan_context = lifespan
    return proxy
