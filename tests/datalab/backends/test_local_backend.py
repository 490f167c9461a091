"""The local backend with real processes: lifecycle, failures, restart, logs, limits.

These services run in a bare venv (no packages) so that each test takes about a second; the
JupyterLab end-to-end test is in test_local_jupyter.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from datalab.backends.base import BackendError, Phase, ServiceNotFound
from datalab.backends.local import LocalBackend
from datalab.backends.local.limits import CgroupV1Limiter
from datalab.backends.local.record import ServiceRecord
from datalab.envs import EnvManager

from .conftest import Services

pytestmark = pytest.mark.anyio

# A TCP server on the service's port that prints a line per connection.
SERVE = (
    "import socket, sys, time\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen()\n"
    "print('listening', flush=True)\n"
    "while True:\n"
    "    c, _ = s.accept(); print('connection', flush=True); c.close()\n"
)


def serve_recipe(services: Services, **extra: Any) -> dict[str, Any]:
    recipe = services.python(SERVE, **extra)
    recipe["command"] = ["python", "-c", SERVE, "{{ service.port }}"]
    return recipe


async def test_http_service_lifecycle(backend: LocalBackend, services: Services) -> None:
    spec = services.spec("http_server", values={"resources": {"requests": {"cpu": "250m"}}})
    status = await backend.install(spec)
    assert status.phase is Phase.BUILDING
    status = await services.wait(spec.id, Phase.RUNNING, Phase.FAILED)
    assert status.phase is Phase.RUNNING, status.reason
    assert status.urls == [f"http://{spec.id}.localhost:8000/"]  # its own origin
    assert status.resources == {"cpu": 0.25}
    assert status.ready_at and status.started_at and status.ready_at >= status.started_at

    endpoint = await backend.endpoint(spec.id)
    assert endpoint is not None and endpoint.port and endpoint.socket is None
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"http://127.0.0.1:{endpoint.port}/")).status_code == 200

    events = await backend.events(spec.id)
    reasons = [event.reason for event in events]
    assert reasons[:6] == [
        "Scheduled",
        "ReachableByLocalUsers",  # a recipe on a loopback port: anyone local may connect
        "Building",
        "EnvironmentReady",
        "Started",
        "Ready",
    ]
    assert events[1].type == "Warning"
    assert await backend.list() == [spec.id]
    assert "GET / HTTP/1.1" in "\n".join([line async for line in backend.logs(spec.id)])

    # the process runs in its own session, in the service's private work dir
    pid = backend.get_state(spec.id)["pid"]
    assert os.getsid(pid) == pid
    assert Path(psutil.Process(pid).cwd()) == backend.services_dir / spec.id / "work"
    assert os.stat(backend.services_dir / spec.id / "work").st_mode & 0o777 == 0o700

    await backend.uninstall(spec.id)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not (backend.services_dir / spec.id).exists()
    with pytest.raises(ServiceNotFound):
        await backend.status(spec.id)
    await backend.uninstall(spec.id)  # idempotent


async def test_build_progress_is_reported(data_dir: Path, services: Services) -> None:
    seen: list[tuple[str, str, float]] = []
    backend = LocalBackend(
        data_dir / "p",
        "http://x",
        # an empty cache: this build is real
        env_manager=EnvManager(data_dir / "envs", shared=os.geteuid() == 0),
        on_build_progress=lambda sid, phase, pct, msg: seen.append((sid, phase, pct)),
    )
    spec = services.spec(serve_recipe(services))
    try:
        await backend.install(spec)
        await services.wait(spec.id, Phase.RUNNING, backend=backend)
    finally:
        await backend.shutdown()
    assert {sid for sid, _, _ in seen} == {spec.id}
    assert seen[0][1] == "resolving" and seen[-1][1:] == ("done", 100)


async def test_suspend_resume_keeps_work_dir(backend: LocalBackend, services: Services) -> None:
    spec = services.spec("http_server")
    await services.run(spec)
    workdir = backend.services_dir / spec.id / "work"
    pid = backend.get_state(spec.id)["pid"]
    (workdir / "notes.txt").write_text("kept")

    status = await backend.suspend(spec.id)
    assert status.phase is Phase.SUSPENDED
    assert not psutil.pid_exists(pid)
    assert await backend.endpoint(spec.id) is None

    await backend.resume(spec.id)
    status = await services.wait(spec.id, Phase.RUNNING, Phase.FAILED)
    assert status.phase is Phase.RUNNING
    assert backend.get_state(spec.id)["pid"] != pid
    assert (workdir / "notes.txt").read_text() == "kept"
    reasons = [event.reason for event in await backend.events(spec.id)]
    assert reasons[-6:] == [
        "Suspended", "Resuming", "Building", "EnvironmentReady", "Started", "Ready"
    ]  # fmt: skip


async def test_password_in_the_command_line_is_flagged(
    backend: LocalBackend, services: Services
) -> None:
    recipe = services.python("pass", password="{{ values.pw }}")
    recipe["command"] = ["python", "-c", "pass", "--token={{ values.pw }}"]
    spec = services.spec(recipe, values={"pw": "s3cret-value"})
    await backend.install(spec)
    events = await backend.events(spec.id)
    assert [e.type for e in events if e.reason == "PasswordInCommandLine"] == ["Warning"]


async def test_command_that_exits_at_once_fails_with_its_last_lines(
    backend: LocalBackend,
    services: Services,
) -> None:
    code = "import sys; print('cannot open the database', flush=True); sys.exit(3)"
    spec = services.spec(services.python(code))
    await backend.install(spec)
    status = await services.wait(spec.id, Phase.FAILED, Phase.RUNNING)
    assert status.phase is Phase.FAILED
    assert status.reason is not None
    assert "exited with code 3" in status.reason
    assert "cannot open the database" in status.reason
    events = await backend.events(spec.id)
    assert events[-1].reason == "Failed" and events[-1].type == "Warning"


async def test_readiness_timeout_fails_and_stops_the_process(
    backend: LocalBackend,
    services: Services,
) -> None:
    recipe = services.python("import time; print('never listening', flush=True); time.sleep(60)")
    recipe["readiness"] = {"tcp": True, "timeout": 1}
    spec = services.spec(recipe)
    await backend.install(spec)
    status = await services.wait(spec.id, Phase.STARTING, Phase.FAILED, Phase.RUNNING)
    pid = backend.get_state(spec.id)["pid"]
    status = await services.wait(spec.id, Phase.FAILED, Phase.RUNNING, within=10)
    assert status.phase is Phase.FAILED
    assert status.reason is not None
    assert "readiness timeout" in status.reason and "never listening" in status.reason
    assert not psutil.pid_exists(pid)


async def test_kill_9_is_noticed_within_2_seconds(
    backend: LocalBackend, services: Services
) -> None:
    spec = services.spec(serve_recipe(services))
    await services.run(spec)
    pid = backend.get_state(spec.id)["pid"]
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    status = await services.wait(spec.id, Phase.FAILED, within=2)
    assert time.monotonic() - killed < 2
    assert status.reason is not None
    assert "killed by SIGKILL" in status.reason and "listening" in status.reason
    assert await backend.endpoint(spec.id) is None


async def test_environment_build_failure_carries_the_installer_message(
    backend: LocalBackend,
    services: Services,
) -> None:
    recipe = services.python("pass")
    recipe["environment"] = {"packages": ["datalab-no-such-package-4b1d"]}
    spec = services.spec(recipe)
    await backend.install(spec)
    status = await services.wait(spec.id, Phase.FAILED, Phase.RUNNING, within=60)
    assert status.phase is Phase.FAILED
    assert status.reason is not None
    assert "environment build failed" in status.reason
    assert "datalab-no-such-package-4b1d" in status.reason
    assert "not found in the package registry" in status.reason


async def test_template_errors_are_reported_at_install(
    backend: LocalBackend, services: Services
) -> None:
    recipe = services.python("pass")
    recipe["command"] = ["python", "-c", "{{ values.missing.key }}"]
    with pytest.raises(BackendError, match=r"command\[2\].*missing"):
        await backend.install(services.spec(recipe))
    recipe["command"] = ["python", "{{ ''.__class__.__mro__ }}"]
    with pytest.raises(BackendError, match=r"command\[1\]"):
        await backend.install(services.spec(recipe))
    with pytest.raises(BackendError, match="no local recipe"):
        await backend.install(services.spec(None))
    with pytest.raises(BackendError, match=r"invalid local\.yaml: \(root\): 'command'"):
        await backend.install(services.spec({}))
    with pytest.raises(BackendError, match=r"resources.limits.memory"):
        await backend.install(
            services.spec(recipe, values={"resources": {"limits": {"memory": "lots"}}})
        )
    assert await backend.list() == []


async def test_resume_on_a_port_taken_meanwhile_moves_to_a_free_port(
    backend: LocalBackend,
    services: Services,
) -> None:
    spec = services.spec(serve_recipe(services))
    await services.run(spec)
    old_port = backend.get_state(spec.id)["port"]
    await backend.suspend(spec.id)
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", old_port))
        squatter.listen()
        await backend.resume(spec.id)
        status = await services.wait(spec.id, Phase.RUNNING, Phase.FAILED)
        assert status.phase is Phase.RUNNING, status.reason
        assert backend.get_state(spec.id)["port"] != old_port


class StolenPortBackend(LocalBackend):
    """Simulates the race where another program binds the port between allocation and start."""

    stolen: int | None = None

    def _allocate_port(self, svc: ServiceRecord) -> int:
        if self.stolen is not None:
            port, self.stolen = self.stolen, None
            return port
        return super()._allocate_port(svc)


async def test_port_stolen_before_start_is_retried_on_another_port(
    data_dir: Path,
    shared_envs: EnvManager,
    services: Services,
) -> None:
    backend = StolenPortBackend(data_dir / "b", "http://x", env_manager=shared_envs)
    await backend.start()
    try:
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", 0))
            squatter.listen()
            backend.stolen = squatter.getsockname()[1]
            spec = services.spec(serve_recipe(services))
            await backend.install(spec)
            status = await services.wait(spec.id, Phase.RUNNING, Phase.FAILED, backend=backend)
            assert status.phase is Phase.RUNNING, status.reason
            assert backend.get_state(spec.id)["port"] != squatter.getsockname()[1]
            assert "PortInUse" in [event.reason for event in await backend.events(spec.id)]
    finally:
        await backend.shutdown()


async def test_restart_reattaches_running_and_fails_dead_services(
    data_dir: Path,
    shared_envs: EnvManager,
    services: Services,
) -> None:
    first = LocalBackend(
        data_dir / "p", "http://x", env_manager=shared_envs, stop_services_on_shutdown=False
    )
    await first.start()
    alive, dead = services.spec("http_server"), services.spec(serve_recipe(services))
    for spec in (alive, dead):
        await first.install(spec)
        await services.wait(spec.id, Phase.RUNNING, backend=first)
    states = {spec.id: first.get_state(spec.id) for spec in (alive, dead)}
    await first.shutdown()  # services survive the platform
    alive_pid, dead_pid = states[alive.id]["pid"], states[dead.id]["pid"]
    assert psutil.pid_exists(alive_pid)
    os.kill(dead_pid, signal.SIGKILL)  # dies while the platform is down
    await asyncio.sleep(0.2)

    second = LocalBackend(data_dir / "p", "http://x", env_manager=shared_envs, stop_grace_s=3)
    try:
        status = await second.load_state(alive, states[alive.id])
        assert status.phase is Phase.RUNNING
        assert status.urls == [f"http://{alive.id}.localhost/"]
        endpoint = await second.endpoint(alive.id)
        assert endpoint is not None
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{endpoint.port}/")
            assert response.status_code == 200
        assert (await second.events(alive.id))[-1].reason == "Reattached"

        status = await second.load_state(dead, states[dead.id])
        assert status.phase is Phase.FAILED
        assert status.reason is not None
        assert "no longer running" in status.reason

        # a re-attached process is watched as closely as one started by this instance
        os.kill(alive_pid, signal.SIGKILL)
        status = await services.wait(alive.id, Phase.FAILED, within=2, backend=second)
    finally:
        await second.shutdown()


async def test_reused_pid_is_never_reattached_nor_killed(
    backend: LocalBackend,
    services: Services,
) -> None:
    spec = services.spec("http_server")
    await services.run(spec)
    state = backend.get_state(spec.id)
    await backend.suspend(spec.id)
    # an unrelated session leader now holds "the service's" pid (simulated: same pid number,
    # different start time, which is what pid reuse looks like)
    stranger = await asyncio.create_subprocess_exec("sleep", "30", start_new_session=True)
    try:
        later = datetime.now(UTC) + timedelta(hours=1)  # newer than the backend's own record
        state.update(phase="running", pid=stranger.pid, updated_at=later.isoformat())
        fresh = LocalBackend(backend.data_dir, "http://x", env_manager=backend.envs)
        status = await fresh.load_state(spec, state)
        assert status.phase is Phase.FAILED
        assert stranger.returncode is None and psutil.pid_exists(stranger.pid)
        await fresh.shutdown()
        assert stranger.returncode is None and psutil.pid_exists(stranger.pid)
    finally:
        stranger.kill()
        await stranger.wait()


async def test_shutdown_with_stop_services_leaves_no_orphan(
    data_dir: Path,
    shared_envs: EnvManager,
    services: Services,
) -> None:
    # the service starts a child in its own session, as Jupyter does with kernels
    code = (
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'],"
        " start_new_session=True)\n" + SERVE
    )
    recipe = services.python(code)
    recipe["command"] = ["python", "-c", code, "{{ service.port }}"]
    backend = LocalBackend(data_dir / "s", "http://x", env_manager=shared_envs, stop_grace_s=2)
    await backend.start()
    spec = services.spec(recipe)
    await backend.install(spec)
    await services.wait(spec.id, Phase.RUNNING, backend=backend)
    pid = backend.get_state(spec.id)["pid"]
    main = psutil.Process(pid)
    children = main.children(recursive=True)
    assert children
    await backend.shutdown()
    for process in [main, *children]:
        assert not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    again = LocalBackend(data_dir / "s", "http://x", env_manager=shared_envs)
    status = await again.load_state(spec, {})  # its own record says why it stopped
    assert status.reason is not None
    assert status.phase is Phase.SUSPENDED and "shut down" in status.reason
    await again.shutdown()


async def test_logs_tail_and_follow(backend: LocalBackend, services: Services) -> None:
    code = (
        "import itertools, time\n"
        "for i in itertools.count():\n"
        "    print(f'line {i}', flush=True); time.sleep(0.05)\n"
    )
    recipe = services.python(code)
    recipe["readiness"] = {"tcp": "1", "timeout": 0.5}  # never ready: we only want its logs
    spec = services.spec(recipe)
    await backend.install(spec)
    status = await services.wait(spec.id, Phase.STARTING)
    assert status.reason == "waiting until ready (port 1)"
    seen: list[str] = []
    async for line in backend.logs(spec.id, tail=1, follow=True):
        seen.append(line)
        if len(seen) == 5:
            break
    numbers = [int(line.split()[1]) for line in seen if line.startswith("line ")]
    assert len(numbers) >= 4 and numbers == sorted(numbers)
    tail = [line async for line in backend.logs(spec.id, tail=3)]
    assert len(tail) == 3


async def test_log_rotation(data_dir: Path, shared_envs: EnvManager, services: Services) -> None:
    code = "import sys\nfor i in range(20000): print('x' * 99)\nsys.stdout.flush()\n" + SERVE
    recipe = services.python(code)
    recipe["command"] = ["python", "-c", code, "{{ service.port }}"]
    backend = LocalBackend(
        data_dir / "r", "http://x", env_manager=shared_envs, log_max_bytes=100_000, log_backups=2
    )
    await backend.start()
    try:
        spec = services.spec(recipe)
        await backend.install(spec)
        await services.wait(spec.id, Phase.RUNNING, backend=backend)
        log_file = backend.services_dir / spec.id / "service.log"
        deadline = time.monotonic() + 5
        while not log_file.with_name("service.log.1").exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert log_file.with_name("service.log.1").stat().st_size > 1_000_000
        assert log_file.stat().st_size < 100_000
    finally:
        await backend.shutdown()


@pytest.mark.skipif(os.geteuid() != 0, reason="per-user accounts need root")
async def test_one_users_service_cannot_read_anothers_files(
    backend: LocalBackend,
    services: Services,
) -> None:
    alice = services.spec(serve_recipe(services), owner="alice")
    await services.run(alice)
    secret = backend.services_dir / alice.id / "work" / "secret.txt"
    secret.write_text("alice's data")
    os.chown(secret, *_ids(backend, alice.id))
    code = (
        "import sys\n"
        "try:\n"
        f"    print(open({str(secret)!r}).read(), flush=True)\n"
        "except PermissionError as e:\n"
        "    print('denied:', e, flush=True); sys.exit(13)\n"
    )
    bob = services.spec(services.python(code), owner="bob")
    await backend.install(bob)
    status = await services.wait(bob.id, Phase.FAILED, Phase.RUNNING)
    assert status.reason is not None
    assert "exited with code 13" in status.reason and "denied" in status.reason
    assert "alice's data" not in status.reason
    assert psutil.Process(backend.get_state(alice.id)["pid"]).username() == "datalab-alice"


def _ids(backend: LocalBackend, service_id: str) -> tuple[int, int]:
    stat = os.stat(backend.services_dir / service_id / "work")
    return stat.st_uid, stat.st_gid


async def test_memory_limit_is_enforced(backend: LocalBackend, services: Services) -> None:
    code = "blocks = []\nwhile True:\n    blocks.append(bytearray(16 * 2**20))\n"
    recipe = services.python(code)
    values = {"resources": {"requests": {"memory": "64Mi"}, "limits": {"memory": "128Mi"}}}
    spec = services.spec(recipe, values=values)
    status = await backend.install(spec)
    assert status.resources == {"memory_mb": 64, "memory_limit_mb": 128}
    status = await services.wait(spec.id, Phase.FAILED, Phase.RUNNING, within=30)
    assert status.phase is Phase.FAILED
    # cgroups: the OOM killer's SIGKILL; rlimit: a MemoryError
    assert status.reason is not None
    assert "SIGKILL" in status.reason or "MemoryError" in status.reason, status.reason


async def test_cpu_limit_is_applied(backend: LocalBackend, services: Services) -> None:
    spec = services.spec(
        serve_recipe(services), values={"resources": {"limits": {"cpu": "500m", "memory": "1Gi"}}}
    )
    await services.run(spec)
    pid = backend.get_state(spec.id)["pid"]
    assert backend.limiter is not None
    if isinstance(backend.limiter, CgroupV1Limiter):  # name "cgroup1"
        cgroup = backend.limiter.cpu_base / spec.id
        assert (cgroup / "cpu.cfs_quota_us").read_text().strip() == "50000"
        assert pid in backend.limiter.pids(spec.id)
    elif backend.limiter.name == "rlimit":
        assert len(os.sched_getaffinity(pid)) == 1


async def test_unknown_service_raises(backend: LocalBackend) -> None:
    for call in (backend.status, backend.events, backend.suspend, backend.resume):
        with pytest.raises(ServiceNotFound):
            await call("nope")
    with pytest.raises(ServiceNotFound):
        backend.get_state("nope")
    with pytest.raises(ServiceNotFound):
        async for _ in backend.logs("nope"):
            pass


def test_launcher_is_stdlib_only() -> None:
    """It runs with ``python -I -S``: no site-packages, so no third-party import may creep in."""
    from datalab.backends.local import process

    result = subprocess.run(
        [sys.executable, "-I", "-S", str(process.LAUNCHER), '{"argv": ["/bin/true"], "cwd": "/"}'],
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


async def test_a_root_it_makes_under_the_platforms_umask_lets_services_in(
    data_dir: Path, shared_envs: EnvManager
) -> None:
    """The platform runs with umask 077 (datalab.files): the folders the backend makes on the
    way to its services' directories must still let the services' accounts pass through."""
    previous = os.umask(0o077)
    try:
        backend = LocalBackend(data_dir / "made" / "here", "http://x", env_manager=shared_envs)
        await backend.start()
    finally:
        os.umask(previous)
    try:
        if backend.isolate_users:
            for made in (data_dir / "made", data_dir / "made" / "here"):
                assert stat.S_IMODE(made.stat().st_mode) == 0o711
        services = Services(backend)
        await services.run(services.spec(serve_recipe(services)))
    finally:
        await backend.shutdown()
