"""The execution backend contract (datalab.backends.base.Backend), one suite run on each
backend: ``memory``, ``local`` (real processes) and ``kubernetes`` (Helm releases on the test
control plane). As JupyterHub's spawner tests do, failure doubles play what goes wrong: a service
that never becomes ready, one that crashes, one that is slow to stop (local: programs that do
so; kubernetes: pods that kwok plays so, see tests/kube/testenv.py's ``faulty_stages``). The
memory backend runs nothing: the failure doubles do not apply to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import helm_python
import pytest
from tests.kube.testenv import FAULT_LABEL, SLOW_STOP_S, KubeCluster

from datalab.backends.base import Backend, Phase, ServiceNotFound, ServiceSpec, ServiceStatus
from datalab.backends.kubernetes import KubernetesBackend
from datalab.backends.local import LocalBackend
from datalab.backends.memory import MemoryBackend
from datalab.config import KubernetesSettings, Quota
from datalab.envs import EnvManager

from .conftest import Services

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

KUBE_CHART = Path(__file__).resolve().parents[2] / "fixtures" / "kube-charts" / "kube-app"
FAULTS = ("never-ready", "crash", "slow-stop")

# local failure doubles: a TCP server on the service's port (ready), one that never listens,
# one that exits with code 1, one that ignores SIGTERM
SERVE = (
    "import signal, socket, sys\n"
    "if sys.argv[2] == 'slow-stop': signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen()\n"
    "while True: s.accept()[0].close()\n"
)
NEVER_READY = "import time; print('not listening', flush=True); time.sleep(600)"
CRASH = "import sys; print('cannot open the database', flush=True); sys.exit(1)"


@dataclass
class Harness:
    backend: Backend
    make: Callable[[str], ServiceSpec]  # "ready" or one of FAULTS
    restart: Callable[[], Awaitable[Backend]]  # the platform restarts: a new instance
    faults: bool = True

    async def wait(self, service_id: str, *phases: Phase, within: float = 60) -> ServiceStatus:
        deadline = time.monotonic() + within
        while True:
            status = await self.backend.status(service_id)
            if status.phase in phases:
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"{service_id} still {status.phase} ({status.reason})")
            await asyncio.sleep(0.1)


@pytest.fixture(params=["memory", "local", "kubernetes"])
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    maker = {"memory": _memory, "local": _local, "kubernetes": _kubernetes}[request.param]
    async for harness in maker(request, tmp_path):
        yield harness


async def _memory(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    harness: Harness  # made below; restart() replaces its backend

    async def restart() -> Backend:
        # its state is the JSON the platform keeps, nothing else
        harness.backend = MemoryBackend()
        return harness.backend

    harness = Harness(MemoryBackend(), lambda kind: _spec(tmp_path, {}), restart, faults=False)
    async with _cleaned(harness):
        yield harness


async def _local(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    data_dir: Path = request.getfixturevalue("data_dir")
    envs: EnvManager = request.getfixturevalue("shared_envs")
    harness: Harness  # made below; restart() replaces its backend

    def new() -> LocalBackend:
        return LocalBackend(
            data_dir, "http://127.0.0.1:8000", env_manager=envs,
            stop_grace_s=2, stop_services_on_shutdown=False,
        )  # fmt: skip

    services = Services(new())

    def make(kind: str) -> ServiceSpec:
        code = {"never-ready": NEVER_READY, "crash": CRASH}.get(kind, SERVE)
        recipe = services.python(code)
        if code is SERVE:
            recipe["command"] = ["python", "-c", SERVE, "{{ service.port }}", kind]
        recipe["readiness"] = {"tcp": True, "timeout": 2 if kind == "never-ready" else 30}
        return services.spec(recipe)

    async def restart() -> Backend:
        await services.backend.shutdown()  # its services outlive it
        services.backend = harness.backend = new()
        await services.backend.start()
        return services.backend

    harness = Harness(services.backend, make, restart)
    async with _cleaned(harness):
        yield harness


async def _kubernetes(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    cluster: KubeCluster = request.getfixturevalue("kube_cluster")
    harness: Harness  # made below; restart() replaces its backend

    def new() -> KubernetesBackend:
        return KubernetesBackend(
            KubernetesSettings(kubeconfig=cluster.kubeconfig, ingress_namespace=None),
            quota_of=lambda project: Quota(max_services=10, cpu=4.0, memory_mb=4096),
            service_url=lambda service: f"http://{service}.localhost/",
        )

    project = f"user-contract-{uuid.uuid4().hex[:4]}"
    defaults = dict(helm_python.Chart.load(KUBE_CHART).values)

    def make(kind: str) -> ServiceSpec:
        labels = {} if kind == "ready" else {FAULT_LABEL: kind}
        spec = _spec(KUBE_CHART, {**defaults, "podLabels": labels})
        return replace(spec, project=project, namespace=project)

    async def restart() -> Backend:
        await harness.backend.shutdown()  # releases stay; the watches stop
        harness.backend = new()
        await harness.backend.start()
        return harness.backend

    harness = Harness(new(), make, restart)
    async with _cleaned(harness):
        yield harness


@contextlib.asynccontextmanager
async def _cleaned(harness: Harness) -> AsyncIterator[None]:
    """Started; at the end, what the test left is uninstalled and the backend shut down."""
    await harness.backend.start()
    try:
        yield
    finally:
        for service_id in await harness.backend.list():
            await harness.backend.uninstall(service_id)
        await harness.backend.shutdown()


def _spec(chart_dir: Path, values: dict[str, Any]) -> ServiceSpec:
    return ServiceSpec(
        id=f"svc-{uuid.uuid4().hex[:8]}",
        owner="alice",
        project="user-alice",
        catalog_id="tests",
        chart_name="kube-app",
        chart_version="0.1.0",
        chart_dir=chart_dir,
        values=values,
    )


# -- the contract ----------------------------------------------------------------------------


async def test_a_service_through_its_life(harness: Harness) -> None:
    spec = harness.make("ready")
    await harness.backend.install(spec)
    status = await harness.wait(spec.id, Phase.RUNNING)
    assert status.started_at is not None and status.reason is None
    assert spec.id in await harness.backend.list()
    assert (await harness.backend.suspend(spec.id)).phase is Phase.SUSPENDED
    assert (await harness.backend.status(spec.id)).phase is Phase.SUSPENDED
    await harness.backend.resume(spec.id)
    await harness.wait(spec.id, Phase.RUNNING)
    assert [e.reason for e in await harness.backend.events(spec.id)]  # what happened, in order
    await harness.backend.uninstall(spec.id)
    with pytest.raises(ServiceNotFound):
        await harness.backend.status(spec.id)
    assert spec.id not in await harness.backend.list()
    await harness.backend.uninstall(spec.id)  # idempotent


async def test_an_unknown_service_is_not_found(harness: Harness) -> None:
    for call in (
        harness.backend.status,
        harness.backend.suspend,
        harness.backend.resume,
        harness.backend.events,
    ):
        with pytest.raises(ServiceNotFound):
            await call("svc-unknown")


async def test_a_restarted_platform_reattaches_from_the_json_state(harness: Harness) -> None:
    spec = harness.make("ready")
    await harness.backend.install(spec)
    await harness.wait(spec.id, Phase.RUNNING)
    state = json.loads(json.dumps(harness.backend.get_state(spec.id)))  # as the database keeps it
    backend = await harness.restart()
    status = await backend.load_state(spec, state)
    if status.phase is not Phase.RUNNING:
        status = await harness.wait(spec.id, Phase.RUNNING, within=30)
    assert status.phase is Phase.RUNNING
    await backend.uninstall(spec.id)


async def test_a_service_that_never_becomes_ready_is_never_running(harness: Harness) -> None:
    if not harness.faults:
        pytest.skip("the memory backend runs nothing: nothing can fail to become ready")
    spec = harness.make("never-ready")
    await harness.backend.install(spec)
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        status = await harness.backend.status(spec.id)
        assert status.phase is not Phase.RUNNING
        await asyncio.sleep(0.2)
    # local: failed at the readiness timeout; Kubernetes: starting until its pods are ready
    assert status.phase in (Phase.STARTING, Phase.FAILED)
    assert status.reason and "ready" in status.reason.lower(), status.reason
    await harness.backend.uninstall(spec.id)


async def test_a_crashing_service_fails_with_its_exit_code(harness: Harness) -> None:
    if not harness.faults:
        pytest.skip("the memory backend runs nothing: nothing can crash")
    spec = harness.make("crash")
    await harness.backend.install(spec)
    status = await harness.wait(spec.id, Phase.FAILED, within=30)
    assert status.reason and "code 1" in status.reason, status.reason
    await harness.backend.uninstall(spec.id)
    with pytest.raises(ServiceNotFound):
        await harness.backend.status(spec.id)


async def test_a_service_slow_to_stop_is_stopped(harness: Harness) -> None:
    if not harness.faults:
        pytest.skip("the memory backend runs nothing: nothing can be slow to stop")
    spec = harness.make("slow-stop")
    await harness.backend.install(spec)
    await harness.wait(spec.id, Phase.RUNNING)
    started = time.monotonic()
    assert (await harness.backend.suspend(spec.id)).phase is Phase.SUSPENDED
    await harness.backend.uninstall(spec.id)
    # neither waits on it forever (local: SIGKILL after the grace period; Kubernetes: the
    # cluster finishes the deletion)
    assert time.monotonic() - started < SLOW_STOP_S + 10
    with pytest.raises(ServiceNotFound):
        await harness.backend.status(spec.id)
