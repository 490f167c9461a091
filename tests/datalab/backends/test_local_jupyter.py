"""End to end: a real JupyterLab launched by the local backend, used through the service proxy
served by a real uvicorn, as a browser would (token, REST API, kernel over WebSocket)."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil
import pytest
import uvicorn
import websockets
from starlette.types import ASGIApp, Receive, Scope, Send
from websockets.typing import Origin

from datalab.backends.base import Phase, ServiceNotFound
from datalab.backends.local import LocalBackend
from datalab.envs import Env, EnvManager
from datalab.processes import free_port
from datalab.proxy import Route, ServiceProxy, deny

from .conftest import Services

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

TOKEN = "jupyter-token-for-tests"


@asynccontextmanager
async def serve(app: ASGIApp, port: int) -> AsyncIterator[None]:
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", ws="websockets-sansio"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    try:
        yield
    finally:
        server.should_exit = True
        await task


def platform_app(backend: LocalBackend, proxy: ServiceProxy) -> ASGIApp:
    """What the platform does, minus users: ``/s/<id>/...`` to the service's endpoint."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return
        service_id = scope["path"].split("/")[2]
        if dict(scope["headers"]).get(b"x-test-user") == b"mallory":
            await deny(scope, receive, send, 403, "not your service")
            return
        try:
            endpoint = await backend.endpoint(service_id)
        except ServiceNotFound:
            await deny(scope, receive, send, 404, "unknown service")
            return
        if endpoint is None:
            await deny(scope, receive, send, 503, "not running")
            return
        await proxy.forward(scope, receive, send, Route(endpoint, prefix=f"/s/{service_id}"))

    return app


async def execute(ws_url: str, code: str, origin: str) -> str:
    """Run ``code`` in the kernel over its channels WebSocket; return the execute_result."""
    session = uuid.uuid4().hex
    msg_id = uuid.uuid4().hex
    request = {
        "header": {
            "msg_id": msg_id,
            "session": session,
            "username": "test",
            "msg_type": "execute_request",
            "version": "5.3",
            "date": datetime.now(UTC).isoformat(),
        },
        "parent_header": {},
        "metadata": {},
        "content": {"code": code, "silent": False, "store_history": False,
                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
        "channel": "shell",
        "buffers": [],
    }  # fmt: skip
    async with websockets.connect(ws_url, origin=Origin(origin), max_size=None) as ws:
        await ws.send(json.dumps(request))
        async with asyncio.timeout(60):
            while True:
                message = json.loads(await ws.recv())
                if message.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                if message["msg_type"] == "execute_result":
                    return str(message["content"]["data"]["text/plain"])
                if message["msg_type"] == "error":
                    raise AssertionError(message["content"])


async def test_jupyterlab_through_the_backend_and_the_proxy(
    jupyter_env: Env, shared_envs: EnvManager, data_dir: Path, services: Services
) -> None:
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    backend = LocalBackend(data_dir, public, env_manager=shared_envs, stop_grace_s=5)
    await backend.start()
    spec = services.spec(
        "jupyterlab",
        values={
            "security": {"password": TOKEN},
            "resources": {"requests": {"cpu": "100m", "memory": "512Mi"}},
        },
    )
    proxy = ServiceProxy()
    try:
        async with (
            serve(platform_app(backend, proxy), port),
            httpx.AsyncClient(base_url=public) as http,
        ):
            await backend.install(spec)
            status = await services.wait(spec.id, Phase.RUNNING, Phase.FAILED, backend=backend)
            assert status.phase is Phase.RUNNING, status.reason
            assert status.urls == [f"http://{spec.id}.localhost:{port}/lab"]  # its own origin
            # it listens on a Unix socket in a directory only its account can enter
            endpoint = await backend.endpoint(spec.id)
            assert endpoint is not None and endpoint.socket is not None
            socket_dir = Path(endpoint.socket).parent
            assert (socket_dir.stat().st_mode & 0o777) == 0o700
            assert status.password == TOKEN and "alice" in status.notes
            assert status.resources == {"cpu": 0.1, "memory_mb": 512}
            base = f"/s/{spec.id}"
            auth = {"Authorization": f"token {TOKEN}"}

            # the UI page and the authenticated API, through the proxy
            assert (await http.get(f"{base}/api/status")).status_code == 403  # the token is a lock
            page = await http.get(f"{base}/lab", params={"token": TOKEN})  # sets a login cookie
            assert page.status_code == 200 and "JupyterLab" in page.text
            assert (await http.get(f"{base}/api/status", headers=auth)).status_code == 200
            denied = await http.get(
                f"{base}/api/status", headers={**auth, "x-test-user": "mallory"}
            )
            assert denied.status_code == 403

            # a kernel executes code over the WebSocket channels (with a browser's Origin)
            kernel = await http.post(f"{base}/api/kernels", headers=auth, json={"name": "python3"})
            assert kernel.status_code == 201, kernel.text
            ws_url = f"ws://127.0.0.1:{port}{base}/api/kernels/{kernel.json()['id']}/channels"
            assert await execute(f"{ws_url}?token={TOKEN}", "6*7", origin=public) == "42"
            whoami = await execute(
                f"{ws_url}?token={TOKEN}", "import getpass; getpass.getuser()", origin=public
            )
            if os.geteuid() == 0:
                assert whoami == "'datalab-alice'"

            # a file written through Jupyter survives suspend -> resume
            put = await http.put(
                f"{base}/api/contents/hello.txt",
                headers=auth,
                json={"type": "file", "format": "text", "content": "kept across suspend"},
            )
            assert put.status_code == 201, put.text
            workdir = backend.services_dir / spec.id / "work"
            assert (workdir / "hello.txt").read_text() == "kept across suspend"
            pid = backend.get_state(spec.id)["pid"]
            kernels = psutil.Process(pid).children(recursive=True)
            assert kernels

            assert (await backend.suspend(spec.id)).phase is Phase.SUSPENDED
            assert all(not k.is_running() for k in kernels), "a kernel outlived the suspend"
            assert (await http.get(f"{base}/api/status", headers=auth)).status_code == 503
            await backend.resume(spec.id)
            status = await services.wait(spec.id, Phase.RUNNING, Phase.FAILED, backend=backend)
            assert status.phase is Phase.RUNNING, status.reason
            got = await http.get(f"{base}/api/contents/hello.txt", headers=auth)
            assert got.json()["content"] == "kept across suspend"

            await backend.uninstall(spec.id)
            assert not workdir.exists()
            assert (await http.get(f"{base}/api/status", headers=auth)).status_code == 404
    finally:
        await proxy.aclose()
        await backend.shutdown()
