"""The local backend: environment build, launch-to-ready, and the service proxy's overhead.

- ``cold_build_empty_uv_cache_s``: building the ``jupyter-python`` environment from nothing
  (empty uv cache: every wheel downloaded from the index); ``cold_build_s``: into an empty env
  cache with this machine's uv cache (what a second platform on the machine sees).
- ``launch_to_ready_*``: ``install()`` to ``running`` for ``jupyter-python`` with that env warm,
  next to starting the same ``jupyter lab`` command directly (same env, same flags, same probe).
  Target: ratio <= 1.5.
- ``proxy_*``: a 10 MB download and small requests through the proxy vs straight to the server,
  which listens on a Unix socket as services do.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from datalab.backends.base import Endpoint, Phase, ServiceSpec
from datalab.backends.local import LocalBackend
from datalab.backends.local.accounts import account_name
from datalab.backends.local.recipe import render_recipe
from datalab.envs import EnvManager, EnvSpec
from datalab.proxy import Route as ProxyRoute
from datalab.proxy import ServiceProxy

CHART = Path(__file__).parents[1] / "catalog" / "jupyter-python"
LAUNCHES = 3
SMALL_REQUESTS = 300
DOWNLOADS = 5
MB = 2**20


def run() -> dict[str, Any]:
    return asyncio.run(_run())


async def _run() -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="datalab-bench-", dir="/tmp"))
    os.chmod(root, 0o711)  # noqa: S103 - the services' accounts must enter it
    try:
        results: dict[str, Any] = {}
        results.update(await _launches(root))
        results.update(await _proxy())
        return results
    finally:
        shutil.rmtree(root, ignore_errors=True)


# -- launch to ready ----------------------------------------------------------------------------


def _spec(values: dict[str, Any]) -> ServiceSpec:
    return ServiceSpec(
        id=f"jupyter-{uuid.uuid4().hex[:6]}",
        owner="bench",
        project="user-bench",
        catalog_id="bench",
        chart_name="jupyter-python",
        chart_version="bench",
        chart_dir=CHART,  # its local.yaml is the recipe
        values=values,
    )


async def _launches(root: Path) -> dict[str, Any]:
    recipe = yaml.safe_load((CHART / "local.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    values["security"]["password"] = uuid.uuid4().hex
    values["git"]["enabled"] = False  # the platform would inject the user's git identity
    envs = EnvManager(root / "envs", shared=os.geteuid() == 0)

    env_spec = EnvSpec.from_recipe(recipe["environment"])
    # truly cold: an empty uv cache too, so every wheel is downloaded from the index
    empty_cache = EnvManager(root / "envs-cold", uv_env={"UV_CACHE_DIR": str(root / "uv-cache")})
    started = time.perf_counter()
    await empty_cache.ensure(env_spec)
    cold_build_empty_uv_cache_s = time.perf_counter() - started
    shutil.rmtree(root / "envs-cold", ignore_errors=True)
    shutil.rmtree(root / "uv-cache", ignore_errors=True)
    # cold for datalab (empty env cache), with this machine's uv cache
    started = time.perf_counter()
    env = await envs.ensure(env_spec)
    cold_build_s = time.perf_counter() - started

    backend = LocalBackend(root / "data", "http://127.0.0.1:8000", env_manager=envs)
    await backend.start()
    platform: list[float] = []
    bare: list[float] = []
    try:
        for _ in range(LAUNCHES):
            spec = _spec(values)
            started = time.perf_counter()
            await backend.install(spec)
            status = await _settled(backend, spec.id)
            if status.phase is not Phase.RUNNING:
                raise RuntimeError(f"jupyter-python did not start: {status.reason}")
            platform.append(time.perf_counter() - started)
            await backend.uninstall(spec.id)
            bare.append(await _bare_launch(backend, spec, env.path))
    finally:
        await backend.shutdown()
    ratio = statistics.median(platform) / statistics.median(bare)
    return {
        "cold_build_empty_uv_cache_s": round(cold_build_empty_uv_cache_s, 2),
        "cold_build_s": round(cold_build_s, 2),
        "env_packages_locked": len(env.locked),
        "launch_to_ready_platform_s": [round(x, 2) for x in platform],
        "launch_to_ready_bare_s": [round(x, 2) for x in bare],
        "launch_to_ready_platform_median_s": round(statistics.median(platform), 2),
        "launch_to_ready_bare_median_s": round(statistics.median(bare), 2),
        "launch_ratio": round(ratio, 2),
        "launch_ratio_target": 1.5,
        "limiter": backend.limiter.name if backend.limiter else None,
    }


async def _settled(backend: LocalBackend, service_id: str) -> Any:
    """Poll the status as a client would, until it is no longer building or starting."""
    while True:
        status = await backend.status(service_id)
        if status.phase not in (Phase.BUILDING, Phase.STARTING):
            return status
        await asyncio.sleep(0.02)


async def _bare_launch(backend: LocalBackend, spec: ServiceSpec, env_dir: Path) -> float:
    """The same command, env, account and probe, started directly: the backend adds the rest."""
    workdir = Path(tempfile.mkdtemp(prefix="bare-", dir=backend.data_dir))
    sock = workdir / "http.sock"
    context = {
        "values": spec.values,
        "service": {
            "id": spec.id, "owner": spec.owner, "project": spec.project, "port": 0,
            "socket": str(sock), "host": "127.0.0.1", "base_url": "/",
            "url": f"http://{spec.id}.localhost:8000/",
            "internal_url": f"http://127.0.0.1:8000/s/{spec.id}/", "token": "",
            "workdir": str(workdir),
        },
        "env_dir": str(env_dir),
    }  # fmt: skip
    rendered = render_recipe(yaml.safe_load((spec.chart_dir / "local.yaml").read_text()), context)
    argv = [str(env_dir / "bin" / rendered.command[0]), *rendered.command[1:]]
    environ = {
        "PATH": f"{env_dir}/bin:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(workdir),
        "LANG": "C.UTF-8",
        **rendered.env,
    }
    account: tuple[int, int] | None = None
    if backend.isolate_users:  # Jupyter refuses to run as root, and the backend would not
        entry = pwd.getpwnam(account_name(spec.owner))
        account = (entry.pw_uid, entry.pw_gid)
        os.chown(workdir, *account)
    log_path = workdir.with_suffix(".log")
    started = time.perf_counter()
    with open(log_path, "wb") as log:
        process = await asyncio.create_subprocess_exec(
            *argv,
            env=environ,
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=account[0] if account else None,
            group=account[1] if account else None,
            extra_groups=[] if account else None,
        )
    try:
        transport = httpx.AsyncHTTPTransport(uds=str(sock))
        async with httpx.AsyncClient(transport=transport, timeout=2) as client:
            while process.returncode is None and time.perf_counter() - started < 180:
                try:
                    response = await client.get(f"http://localhost{rendered.readiness_http}")
                    if response.status_code < 400 or response.status_code in (401, 403):
                        return time.perf_counter() - started
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        tail = log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"bare jupyter lab did not get ready: {tail}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        await process.wait()
        shutil.rmtree(workdir, ignore_errors=True)
        log_path.unlink(missing_ok=True)


# -- proxy overhead -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _serve(
    app: Any, port: int | None = None, uds: str | None = None
) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port or 0, uds=uds, log_level="warning", ws="websockets-sansio"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn offers no "started" event
        await asyncio.sleep(0.01)
    return server, task


async def _proxy() -> dict[str, Any]:
    blob = os.urandom(10 * MB)

    async def big(request: Request) -> Response:
        return Response(blob, media_type="application/octet-stream")

    async def small(request: Request) -> Response:
        return Response(b"ok")

    platform_port = _free_port()
    sock = str(Path(tempfile.mkdtemp(prefix="bench-proxy-")) / "up.sock")
    upstream = Starlette(routes=[Route("/big", big), Route("/small", small)])
    proxy = ServiceProxy()
    route = ProxyRoute(Endpoint(socket=sock), prefix="/s/svc")

    async def platform(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await proxy.forward(scope, receive, send, route)

    servers = [await _serve(upstream, uds=sock), await _serve(platform, platform_port)]
    direct = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=sock), base_url="http://svc")
    proxied = httpx.AsyncClient(base_url=f"http://127.0.0.1:{platform_port}/s/svc")
    try:
        out: dict[str, Any] = {}
        for name, client in (("direct", direct), ("proxied", proxied)):
            async with client:
                await client.get("/small")  # warm the connections
                downloads = []
                for _ in range(DOWNLOADS):
                    started = time.perf_counter()
                    response = await client.get("/big")
                    downloads.append(time.perf_counter() - started)
                    assert len(response.content) == len(blob)
                latencies = []
                for _ in range(SMALL_REQUESTS):
                    started = time.perf_counter()
                    await client.get("/small")
                    latencies.append((time.perf_counter() - started) * 1000)
            latencies.sort()
            out[f"proxy_10mb_{name}_median_ms"] = round(statistics.median(downloads) * 1000, 1)
            out[f"proxy_small_{name}_p50_ms"] = round(latencies[len(latencies) // 2], 2)
            out[f"proxy_small_{name}_p99_ms"] = round(latencies[int(len(latencies) * 0.99)], 2)
        out["proxy_10mb_overhead_ms"] = round(
            out["proxy_10mb_proxied_median_ms"] - out["proxy_10mb_direct_median_ms"], 1
        )
        out["proxy_small_overhead_p50_ms"] = round(
            out["proxy_small_proxied_p50_ms"] - out["proxy_small_direct_p50_ms"], 2
        )
        return out
    finally:
        await proxy.aclose()
        for server, task in servers:
            server.should_exit = True
            await task
        shutil.rmtree(Path(sock).parent, ignore_errors=True)
