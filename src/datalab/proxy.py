"""The reverse proxy in front of services: one request (HTTP or WebSocket) forwarded to where a
service listens, a Unix socket (the way only the platform can reach) or a loopback port.

It passes HTTP (request and response bodies streamed, with httpx) and WebSocket traffic (with
``websockets``) and knows nothing about users: :mod:`datalab.gateway` decides who may reach
which service and calls :meth:`ServiceProxy.forward` with a :class:`Route`.

It keeps nothing between requests: no cookie jar (what the browser sends is what the service
gets, so one caller's sign-in to a service never serves another caller), connections pooled
per endpoint only.

Headers: hop-by-hop headers (RFC 9110 section 7.6.1 and those named in ``Connection``) are
dropped both ways; ``Host`` is kept as the client sent it (JupyterLab compares it with
``Origin``); ``X-Forwarded-For``/``-Proto``/``-Host`` are set, and ``X-Forwarded-Prefix`` when
a prefix is stripped. The platform's own cookies are withheld from services (``drop_cookies``)
so that a service never sees a caller's platform credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.cookiejar
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import quote

import httpx
from starlette.types import Message, Receive, Scope, Send
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Origin

from datalab.backends.base import Endpoint

log = logging.getLogger(__name__)

#: connection pools kept (one per service endpoint); the least recently used is closed
MAX_POOLS = 256


@dataclass(frozen=True)
class Route:
    """Where one request goes: the service's endpoint, and the path prefix under which the
    caller reached it (removed before forwarding, put back in relative redirects)."""

    endpoint: Endpoint
    prefix: str = ""
    response_headers: tuple[tuple[bytes, bytes], ...] = ()  # added to (or replacing) the answer's


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


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    """httpx keeps the cookies of every response in its client; the proxy must keep none."""

    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False

    def return_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False


class ServiceProxy:
    """Forwards requests to services. Close it with :meth:`aclose`."""

    def __init__(
        self, *, drop_cookies: Collection[str] = (), connect_timeout_s: float = 10.0
    ) -> None:
        self.drop_cookies = frozenset(drop_cookies)
        self.connect_timeout_s = connect_timeout_s
        self._clients: OrderedDict[Endpoint, httpx.AsyncClient] = OrderedDict()

    def client(self, endpoint: Endpoint) -> httpx.AsyncClient:
        """The connection pool of one endpoint (Unix socket or port)."""
        client = self._clients.get(endpoint)
        if client is not None:
            self._clients.move_to_end(endpoint)
            return client
        transport = httpx.AsyncHTTPTransport(
            uds=endpoint.socket,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=20),
        )
        client = self._clients[endpoint] = httpx.AsyncClient(
            transport=transport,
            # no read timeout: long polls, event streams and big downloads are normal
            timeout=httpx.Timeout(None, connect=self.connect_timeout_s),
            follow_redirects=False,
            trust_env=False,  # never send service traffic through an HTTP(S)_PROXY
            cookies=http.cookiejar.CookieJar(policy=_NoCookies()),
        )
        while len(self._clients) > MAX_POOLS:
            _, oldest = self._clients.popitem(last=False)
            asyncio.get_running_loop().create_task(oldest.aclose())
        return client

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), OrderedDict()
        for client in clients:
            await client.aclose()

    async def forward(self, scope: Scope, receive: Receive, send: Send, route: Route) -> None:
        """Pass one HTTP request or WebSocket connection to the service and its answer back."""
        path = _upstream_path(scope, route)
        if scope["type"] == "http":
            await self._http(scope, receive, send, route, path)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send, route, path)

    # -- HTTP -----------------------------------------------------------------------------------

    async def _http(
        self, scope: Scope, receive: Receive, send: Send, route: Route, path: str
    ) -> None:
        headers = self._forward_headers(scope, route)
        has_body = any(
            name in (b"content-length", b"transfer-encoding") for name, _ in scope["headers"]
        )
        body = _RequestBody(receive) if has_body else None
        client = self.client(route.endpoint)
        request = client.build_request(
            scope["method"], route.endpoint.url + path, headers=headers, content=body
        )
        try:
            response = await client.send(request, stream=True)
        except httpx.TimeoutException:
            await respond(send, 504, "the service did not answer in time")
            return
        except httpx.TransportError as exc:
            log.debug("proxy to %s failed: %s", route.endpoint, exc)
            await respond(send, 502, "the service is not reachable (is it running?)")
            return
        try:
            pump = asyncio.create_task(_pump_response(response, send, route))
            # An endless response (event stream, long poll) must end when the client leaves:
            # watch for the disconnect once the request body no longer needs receive().
            watchers = [pump]
            if body is None or body.done:
                watchers.append(asyncio.create_task(_disconnected(receive)))
            results = await _until_first_done(watchers)
            if isinstance(results[0], Exception) and not isinstance(results[0], OSError):
                raise results[0]  # OSError: the client went away mid-response
        finally:
            await response.aclose()

    def _forward_headers(self, scope: Scope, route: Route) -> list[tuple[bytes, bytes]]:
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
        if route.prefix:
            out.append((b"x-forwarded-prefix", route.prefix.encode("latin-1")))
        return out

    # -- WebSocket ------------------------------------------------------------------------------

    async def _websocket(
        self, scope: Scope, receive: Receive, send: Send, route: Route, path: str
    ) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        endpoint = route.endpoint
        headers = self._forward_headers(scope, route)
        host = next((v.decode("latin-1") for n, v in scope["headers"] if n == b"host"), None)
        origin = next(
            (Origin(v.decode("latin-1")) for n, v in scope["headers"] if n == b"origin"), None
        )
        user_agent = next(
            (v.decode("latin-1") for n, v in scope["headers"] if n == b"user-agent"), None
        )
        extra = [
            (n.decode("latin-1"), v.decode("latin-1"))
            for n, v in headers
            if n.decode("latin-1") not in WS_HANDSHAKE
        ]
        # a service listening on a Unix socket: connect's keyword arguments for it
        unix: dict[str, Any] = {"unix": True, "path": endpoint.socket} if endpoint.socket else {}
        try:
            upstream = await connect(
                endpoint.url.replace("http://", "ws://", 1) + path,
                additional_headers=extra,
                origin=origin,
                user_agent_header=user_agent,
                subprotocols=scope.get("subprotocols") or None,
                compression=None,  # loopback: compressing costs CPU for nothing
                max_size=None,
                ping_interval=None,  # the client's own keep-alive passes through
                open_timeout=self.connect_timeout_s,
                close_timeout=2,  # a service that does not answer a close frame: drop it
                create_connection=_preserving_host(host),
                proxy=None,
                **unix,
            )
        except InvalidStatus as exc:
            await deny(scope, receive, send, exc.response.status_code, "refused by the service")
            return
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            log.debug("websocket proxy to %s failed: %s", endpoint, exc)
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
    for result in await _until_first_done(tasks):
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

                # replaces the method on this connection's protocol only (websockets has no
                # hook for the Host header of the handshake)
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


async def _pump_response(response: httpx.Response, send: Send, route: Route) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": _response_headers(response.headers.raw, route),
        }
    )
    async for chunk in response.aiter_raw():
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _until_first_done(tasks: list[asyncio.Task[None]]) -> list[BaseException | None]:
    """Wait for the first of ``tasks`` to end, cancel the others (also when this wait is
    cancelled) and give each task's outcome: None, or the exception it ended with."""
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    return results


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _response_headers(raw: list[tuple[bytes, bytes]], route: Route) -> list[tuple[bytes, bytes]]:
    connection_tokens = {
        token.strip().lower().encode("latin-1")
        for name, value in raw
        if name.lower() == b"connection"
        for token in value.decode("latin-1").split(",")
    }
    replaced = {name for name, _ in route.response_headers}
    out = list(route.response_headers)
    for name, value in raw:
        lower = name.lower()
        if lower.decode("latin-1") in HOP_BY_HOP or lower in connection_tokens or lower in replaced:
            continue
        # the service redirects to /x, unaware of the prefix it was reached under: keep it
        stripped = route.prefix and value.startswith(b"/") and not value.startswith(b"//")
        if lower == b"location" and stripped:
            value = route.prefix.encode("latin-1") + value
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


def _upstream_path(scope: Scope, route: Route) -> str:
    """The path (and query) to request upstream, percent-encoded exactly as the client sent it,
    without the route's prefix."""
    raw: bytes | None = scope.get("raw_path")
    path = raw.decode("latin-1") if raw else quote(scope["path"])
    if route.prefix and path.startswith(route.prefix):
        path = path[len(route.prefix) :] or "/"
    query = scope.get("query_string", b"")
    return path + ("?" + query.decode("latin-1") if query else "")


async def respond(
    send: Send, status: int, text: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = text.encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8")]
    headers += [(b"content-length", str(len(body)).encode())] + (extra or [])
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def deny(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    detail: str,
    headers: Mapping[str, str] | None = None,
) -> None:
    extra = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    if scope["type"] == "http":
        await respond(send, status, detail, extra)
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
