"""The service proxy between a real client, a real platform server and real upstream servers
(uvicorn, in process, on a port and on a Unix socket): streaming, headers, WebSocket, errors,
and nothing kept between callers. Who may reach a service is the gateway's (test_gateway.py)."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
import websockets
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Origin, Subprotocol

from datalab.backends.base import Endpoint
from datalab.processes import free_port
from datalab.proxy import Route as ProxyRoute
from datalab.proxy import ServiceProxy, deny

pytestmark = pytest.mark.anyio

MB = 2**20


@asynccontextmanager
async def serve(
    app: ASGIApp, port: int | None = None, uds: str | None = None
) -> AsyncIterator[None]:
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port or 0,
        uds=uds,
        log_level="warning",
        ws="websockets-sansio",
        proxy_headers=False,  # the test client is not a trusted proxy: X-Forwarded-* are its own
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        await task


# -- the upstream service ------------------------------------------------------------------------


async def echo(request: Request) -> JSONResponse:
    body = b""
    async for chunk in request.stream():
        body += chunk
    return JSONResponse(
        {
            "method": request.method,
            "raw_path": request.scope["raw_path"].decode(),
            "query": request.scope["query_string"].decode(),
            "headers": [[k.decode(), v.decode()] for k, v in request.scope["headers"]],
            "length": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
        }
    )


def payload(size: int) -> bytes:
    return (hashlib.sha256(b"x").digest() * (size // 32 + 1))[:size]


async def big(request: Request) -> Response:
    data = payload(10 * MB)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 64 * 1024):
            yield data[start : start + 64 * 1024]

    return StreamingResponse(chunks(), headers={"content-length": str(len(data))})


async def slow(request: Request) -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"first\n"
        await asyncio.sleep(1)
        yield b"second\n"

    return StreamingResponse(chunks(), media_type="text/plain")


ENDLESS = {"closed": asyncio.Event()}


async def endless(request: Request) -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"data: tick\n\n"
                await asyncio.sleep(0.05)
        finally:
            ENDLESS["closed"].set()

    return StreamingResponse(chunks(), media_type="text/event-stream")


async def gzipped(request: Request) -> Response:
    return Response(gzip.compress(b"compressed " * 100), headers={"content-encoding": "gzip"})


async def redirect(request: Request) -> RedirectResponse:
    return RedirectResponse("/login", status_code=302)


async def ws_echo(websocket: WebSocket) -> None:
    subprotocol = "echo.v1" if "echo.v1" in websocket.scope.get("subprotocols", []) else None
    await websocket.accept(subprotocol=subprotocol)
    headers = {k.decode(): v.decode() for k, v in websocket.scope["headers"]}
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") == "headers?":
            await websocket.send_text(json.dumps(headers))
        elif message.get("text") == "close-4001":
            await websocket.close(code=4001)
            return
        elif message.get("text") is not None:
            await websocket.send_text(message["text"])
        else:
            await websocket.send_bytes(message["bytes"])


async def set_cookie(request: Request) -> Response:
    return Response("set", headers={"set-cookie": "service_session=alice; Path=/"})


def upstream_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/echo/{rest:path}", echo, methods=["GET", "POST", "PUT"]),
            Route("/echo", echo, methods=["GET", "POST", "PUT"]),
            Route("/big", big),
            Route("/slow", slow),
            Route("/endless", endless),
            Route("/gzip", gzipped),
            Route("/redirect", redirect),
            Route("/set-cookie", set_cookie),
            WebSocketRoute("/ws", ws_echo),
        ]
    )


# -- the platform ----------------------------------------------------------------------------------


@pytest.fixture
async def proxy_urls(tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    """A platform whose /s/<name>/ forwards to: svc (a port), unix (a Unix socket), down
    (nobody listens); denied and stopped are refused before the proxy."""
    upstream_port, platform_port, dead_port = free_port(), free_port(), free_port()
    socket_path = str(tmp_path / "up.sock")
    proxy = ServiceProxy(drop_cookies=["datalab_session"])
    endpoints = {
        "svc": Endpoint(port=upstream_port),
        "unix": Endpoint(socket=socket_path),
        "down": Endpoint(port=dead_port),
    }

    async def platform(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return
        name = scope["path"].split("/")[2]
        if name in endpoints:
            route = ProxyRoute(endpoints[name], prefix=f"/s/{name}")
            await proxy.forward(scope, receive, send, route)
        elif name == "denied":
            await deny(scope, receive, send, 403, "not yours")
        elif name == "stopped":
            await deny(scope, receive, send, 503, "the service is not running")
        else:
            await deny(scope, receive, send, 404, "unknown service")

    upstream = upstream_app()
    async with (
        serve(upstream, upstream_port),
        serve(upstream, uds=socket_path),
        serve(platform, platform_port),
    ):
        yield f"http://127.0.0.1:{platform_port}", f"http://127.0.0.1:{upstream_port}"
    await proxy.aclose()


async def test_headers_path_and_cookies(proxy_urls: tuple[str, str]) -> None:
    public, _ = proxy_urls
    async with httpx.AsyncClient(base_url=public) as http:
        response = await http.get(
            "/s/svc/echo/a%2Fb%20c",
            params={"x": "1", "y": "/"},
            headers={
                "Connection": "keep-alive, X-Hop",
                "X-Hop": "must not pass",
                "Keep-Alive": "timeout=5",
                "X-Forwarded-Proto": "https",  # spoofed by the client
                "X-Forwarded-For": "10.0.0.1",
                "Cookie": "datalab_session=secret; _xsrf=abc",
                "Authorization": "token t",
            },
        )
    assert response.status_code == 200
    seen = response.json()
    headers = dict(seen["headers"])
    assert seen["raw_path"] == "/echo/a%2Fb%20c"  # the prefix is the platform's, not the service's
    assert seen["query"] == "x=1&y=%2F"
    assert headers["host"] == public.removeprefix("http://")
    assert headers["x-forwarded-host"] == public.removeprefix("http://")
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-for"] == "10.0.0.1, 127.0.0.1"
    assert headers["cookie"] == "_xsrf=abc"
    assert headers["authorization"] == "token t"
    assert "x-hop" not in headers and "keep-alive" not in headers
    assert headers["x-forwarded-prefix"] == "/s/svc"


async def test_streamed_upload_and_download(proxy_urls: tuple[str, str]) -> None:
    public, _ = proxy_urls
    upload = payload(5 * MB)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(upload), MB):
            yield upload[start : start + MB]

    async with httpx.AsyncClient(base_url=public, timeout=30) as http:
        response = await http.post("/s/svc/echo", content=chunks())
        assert response.json()["length"] == len(upload)
        assert response.json()["sha256"] == hashlib.sha256(upload).hexdigest()
        response = await http.put("/s/svc/echo", content=upload)
        assert response.json()["sha256"] == hashlib.sha256(upload).hexdigest()

        download = await http.get("/s/svc/big")
        assert download.headers["content-length"] == str(10 * MB)
        assert download.content == payload(10 * MB)

        # the response is streamed: the first chunk arrives before the upstream finishes
        started = time.monotonic()
        async with http.stream("GET", "/s/svc/slow") as stream:
            first = await stream.aiter_raw().__anext__()
            assert first == b"first\n" and time.monotonic() - started < 0.8

        # bodies pass untouched: compressed stays compressed
        raw = await http.get("/s/svc/gzip", headers={"Accept-Encoding": "gzip"})
        assert raw.headers["content-encoding"] == "gzip"
        assert raw.content == b"compressed " * 100  # httpx decoded what the proxy passed


async def test_client_leaving_an_endless_response_closes_the_upstream(
    proxy_urls: tuple[str, str],
) -> None:
    public, _ = proxy_urls
    ENDLESS["closed"] = asyncio.Event()
    async with (
        httpx.AsyncClient(base_url=public) as http,
        http.stream("GET", "/s/svc/endless") as stream,
    ):
        assert (await stream.aiter_raw().__anext__()).startswith(b"data: tick")
    await asyncio.wait_for(ENDLESS["closed"].wait(), 5)


async def test_prefix_and_redirects(proxy_urls: tuple[str, str]) -> None:
    public, _ = proxy_urls
    async with httpx.AsyncClient(base_url=public) as http:
        seen = (await http.get("/s/svc/echo", params={"q": "1"})).json()
        assert seen["raw_path"] == "/echo" and seen["query"] == "q=1"
        assert dict(seen["headers"])["x-forwarded-prefix"] == "/s/svc"
        moved = await http.get("/s/svc/redirect")
        assert moved.status_code == 302 and moved.headers["location"] == "/s/svc/login"


async def test_unix_socket(proxy_urls: tuple[str, str]) -> None:
    """Services listen on Unix sockets: HTTP, streaming and WebSocket pass the same way."""
    public, _ = proxy_urls
    async with httpx.AsyncClient(base_url=public, timeout=30) as http:
        seen = (await http.post("/s/unix/echo/x", content=b"abc")).json()
        assert seen["raw_path"] == "/echo/x" and seen["length"] == 3
        assert (await http.get("/s/unix/big")).content == payload(10 * MB)
    async with websockets.connect(public.replace("http://", "ws://") + "/s/unix/ws") as ws:
        await ws.send("over a socket")
        assert await ws.recv() == "over a socket"


async def test_no_cookie_kept_between_callers(proxy_urls: tuple[str, str]) -> None:
    """A cookie a service sets goes to the caller who got it, and is never replayed by the
    proxy to anyone else (it once kept one jar for all: a sign-in served every caller)."""
    public, _ = proxy_urls
    async with httpx.AsyncClient(base_url=public) as alice:
        answer = await alice.get("/s/svc/set-cookie")
        assert answer.cookies.get("service_session") == "alice"
    async with httpx.AsyncClient(base_url=public) as stranger:  # no cookies of its own
        for name in ("svc", "unix"):
            seen = (await stranger.get(f"/s/{name}/echo")).json()
            assert "cookie" not in dict(seen["headers"]), seen["headers"]


async def test_denials_and_errors(proxy_urls: tuple[str, str]) -> None:
    public, _ = proxy_urls
    async with httpx.AsyncClient(base_url=public) as http:
        denied = await http.get("/s/denied/x")
        assert (denied.status_code, denied.text) == (403, "not yours")
        assert (await http.get("/s/nope/x")).status_code == 404
        assert (await http.get("/s/stopped/x")).status_code == 503
        assert (await http.get("/s/down/x")).status_code == 502
    ws_base = public.replace("http://", "ws://")
    for service, status in (("denied", 403), ("nope", 404)):
        with pytest.raises(InvalidStatus) as refused:
            async with websockets.connect(f"{ws_base}/s/{service}/ws"):
                pass
        assert refused.value.response.status_code == status


async def test_websocket(proxy_urls: tuple[str, str]) -> None:
    public, _ = proxy_urls
    url = public.replace("http://", "ws://") + "/s/svc/ws"
    async with websockets.connect(
        url,
        subprotocols=[Subprotocol("echo.v1")],
        origin=Origin(public),
        additional_headers={"Cookie": "datalab_session=secret; a=1"},
        max_size=None,
    ) as ws:
        assert ws.subprotocol == "echo.v1"
        await ws.send("hello")
        assert await ws.recv() == "hello"
        await ws.send(b"\x00\x01binary")
        assert await ws.recv() == b"\x00\x01binary"
        big = "x" * (3 * MB)
        await ws.send(big)
        assert await ws.recv() == big
        await ws.send("headers?")
        headers = json.loads(await ws.recv())
        assert headers["host"] == public.removeprefix("http://")  # kept, as for HTTP
        assert headers["origin"] == public
        assert headers["cookie"] == "a=1"
        await ws.send("close-4001")
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001

    # the client closing closes the upstream side too (no leak): a new connection still works
    async with websockets.connect(url) as ws:
        await ws.send("again")
        assert await ws.recv() == "again"
