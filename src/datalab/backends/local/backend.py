"""The local execution backend: each service is a supervised process on this machine, in a
cached environment, reached through the platform's proxy. See ``docs/local-backend.md``."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import glob
import json
import logging
import os
import shlex
import shutil
import stat
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from datalab.backends.base import Backend, Endpoint, Event, Phase, ServiceSpec, ServiceStatus
from datalab.backends.local import logs as service_logs
from datalab.backends.local.accounts import ensure_account
from datalab.backends.local.limits import Limiter, detect_limiter
from datalab.backends.local.process import (
    VAULT_ENV_VARIABLE,
    ProcessRef,
    describe_exit,
    port_squatted,
    spawn,
    terminate,
    wait_exit,
)
from datalab.backends.local.recipe import RenderedRecipe, render_recipe, resolve_command
from datalab.backends.local.record import ServiceRecord, newer_state, read_state_file
from datalab.catalog.chart import load_local_recipe
from datalab.config import Settings, internal_service_url
from datalab.envs import Env, EnvManager, EnvSpec
from datalab.errors import BackendError, DatalabError, EnvBuildError, ServiceNotFound
from datalab.processes import free_port, port_is_free, probe_http, probe_tcp, probe_unix
from datalab.resources import Resources

log = logging.getLogger(__name__)

LOG_NAME = "service.log"
SOCKET_DIR = "run"  # <services>/<id>/run/: the service's account's, 700
SOCKET_NAME = "http.sock"
#: Unix socket paths are limited to 107 bytes (sun_path)
MAX_SOCKET_PATH = 107
FAILURE_LOG_LINES = 20  # last log lines quoted in a failure reason
PORT_ATTEMPTS = 3
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


class LocalBackend(Backend):
    """Runs services as local processes. Requires an asyncio event loop."""

    name = "local"

    def __init__(
        self,
        data_dir: Path,
        public_url: str,
        *,
        stop_services_on_shutdown: bool = True,
        env_build_timeout_s: float = 900,
        readiness_timeout_s: float | None = None,
        isolate_users: bool | None = None,
        stop_grace_s: float = 10.0,
        log_max_bytes: int = 10 * 2**20,
        log_backups: int = 3,
        service_url: Callable[[str], str] | None = None,
        env_manager: EnvManager | None = None,
        on_build_progress: Callable[[str, str, float, str], Any] | None = None,
        maven_repository: str | None = None,
    ) -> None:
        """
        ``public_url``: the platform's URL; services reach each other at
        ``<public_url>/s/<id>/`` with their token. ``service_url(id)``: where users open a
        service, its own origin (default ``<id>.localhost`` with the platform's scheme and port).
        ``isolate_users``: run each user's services under ``datalab-<user>`` (default: when
        the platform runs as root; requires root). ``readiness_timeout_s`` overrides recipes'.
        ``env_manager`` lets several backends (tests) share one environment cache.
        ``on_build_progress(service_id, phase, percent, message)`` follows environment builds
        (for a progress bar); ``status().reason`` shows the same as text.
        ``maven_repository``: where recipes' ``environment.jars`` are downloaded from (None:
        Maven fetches them).
        """
        self.data_dir = Path(data_dir)
        self.public_url = public_url.rstrip("/")
        self.service_url = service_url or _localhost_origin(self.public_url)
        self.stop_services_on_shutdown = stop_services_on_shutdown
        self.readiness_timeout_s = readiness_timeout_s
        self.on_build_progress = on_build_progress
        is_root = os.geteuid() == 0
        if isolate_users and not is_root:
            raise BackendError("isolate_users needs the platform to run as root")
        self.isolate_users = is_root if isolate_users is None else isolate_users
        self.stop_grace_s = stop_grace_s
        self.log_max_bytes = log_max_bytes
        self.log_backups = log_backups
        self.services_dir = self.data_dir / "services"
        if env_manager is not None and self.isolate_users and not env_manager.shared:
            raise BackendError(
                "the EnvManager must be created with shared=True: services run under per-user "
                "accounts, which must be able to run the environments' interpreters"
            )
        self.envs = env_manager or EnvManager(
            self.data_dir / "envs",
            build_timeout_s=env_build_timeout_s,
            shared=self.isolate_users,
            maven_repository=maven_repository,
        )
        self.limiter: Limiter | None = None
        self._services: dict[str, ServiceRecord] = {}
        self._maintenance: asyncio.Task[None] | None = None

    # -- lifecycle of the backend -------------------------------------------------------------

    async def start(self) -> None:
        self._init()

    def _init(self) -> None:
        if self._maintenance is None:  # (again, after a shutdown)
            self._maintenance = asyncio.get_running_loop().create_task(self._maintain())
        if self.limiter is not None:
            return
        made = [d for d in (self.services_dir, *self.services_dir.parents) if not d.exists()]
        self.services_dir.mkdir(parents=True, exist_ok=True)
        if self.isolate_users:
            # accounts may enter their own service dir only: the folders made on the way to it
            # (under the platform's umask 077) let them pass through, not list
            for directory in made:
                os.chmod(directory, 0o711)  # noqa: S103
        self.limiter = detect_limiter()
        if self.isolate_users:
            log.info("local backend: each user's services run under a datalab-<user> account")
        else:
            log.warning(
                "local backend in single-user mode: every service runs as %s and can read the "
                "others' files (run the platform as root for per-user accounts)",
                _current_user(),
            )
        log.info("local backend resource limits: %s", self.limiter.describe())

    async def shutdown(self) -> None:
        if self._maintenance:
            self._maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintenance
            self._maintenance = None
        await asyncio.gather(*(self._shutdown_one(svc) for svc in list(self._services.values())))

    async def _shutdown_one(self, svc: ServiceRecord) -> None:
        async with svc.lock:
            await self._cancel_pipeline(svc)
            if self.stop_services_on_shutdown:
                if svc.process is not None:
                    await self._stop_process(svc)
                if svc.phase in (Phase.BUILDING, Phase.STARTING, Phase.RUNNING):
                    self._transition(
                        svc, Phase.SUSPENDED, "Stopped",
                        "stopped when the platform shut down; resume it to start it again",
                    )  # fmt: skip
            else:  # leave the process running, re-attached at the next start
                if svc.watcher:
                    svc.watcher.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await svc.watcher
                svc.persist()

    async def _maintain(self) -> None:
        """Periodic chores: log rotation (the service writes its log file directly)."""
        while True:
            await asyncio.sleep(1)
            for svc in list(self._services.values()):
                if svc.process is not None:
                    try:
                        service_logs.rotate_if_needed(
                            svc.log_file, self.log_max_bytes, self.log_backups
                        )
                    except OSError as exc:
                        log.warning("cannot rotate %s: %s", svc.log_file, exc)

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalBackend:
        return cls(
            data_dir=settings.data_dir,
            public_url=settings.server.url(),
            service_url=settings.service_url,
            stop_services_on_shutdown=settings.backend.stop_services_on_shutdown,
            env_build_timeout_s=settings.backend.env_build_timeout_s,
            readiness_timeout_s=settings.backend.readiness_timeout_s,
            maven_repository=settings.backend.maven_repository,
        )

    def unavailable(self, chart_dir: Path, chart_name: str) -> str | None:
        try:
            return _missing_binaries(self._recipe(chart_dir, chart_name), chart_name)
        except BackendError as exc:
            return str(exc)

    def environments(self) -> EnvManager:
        return self.envs

    @staticmethod
    def _recipe(chart_dir: Path, chart_name: str) -> dict[str, Any]:
        """The chart's local recipe (``local.yaml``): how it runs as a process here."""
        try:
            recipe = load_local_recipe(chart_dir, chart_name)
        except DatalabError as exc:
            raise BackendError(exc.message) from None
        if recipe is None:
            raise BackendError(
                f"chart {chart_name!r} has no local recipe (local.yaml), so it cannot run on the "
                "local backend; it needs the kubernetes backend"
            )
        return recipe

    # -- the contract -------------------------------------------------------------------------

    async def install(self, spec: ServiceSpec) -> ServiceStatus:
        self._init()
        if spec.id in self._services:
            raise BackendError(f"service {spec.id!r} is already installed")
        svc = await self._new_record(spec)
        rendered = self._dry_render(svc)
        self._make_dirs(svc)
        self._services[spec.id] = svc
        self._add_event(
            svc, "Scheduled", f"{spec.chart_name} {spec.chart_version} for {spec.owner}"
        )
        if rendered.listen == "tcp":
            self._add_event(
                svc, "ReachableByLocalUsers", "the service listens on a loopback port, which "
                "every account of this machine can connect to, bypassing the platform; its own "
                "password is its only lock (recipes should use 'listen: unix')", "Warning",
            )  # fmt: skip
        if rendered.password and any(rendered.password in arg for arg in rendered.command):
            # /proc/<pid>/cmdline is world-readable, and loopback ports are reachable by every
            # local account: the password is the service's only lock against other users
            self._add_event(
                svc, "PasswordInCommandLine", "the service's password appears in its command "
                "line, which other local users can read; pass it in an environment variable",
                "Warning",
            )  # fmt: skip
            log.warning("service %s: password in the command line (%s)", spec.id, spec.chart_name)
        self._launch_pipeline(svc)
        return self._status(svc)

    async def status(self, service_id: str) -> ServiceStatus:
        return self._status(self._get(service_id))

    async def logs(
        self, service_id: str, *, tail: int = 200, follow: bool = False
    ) -> AsyncIterator[str]:
        svc = self._get(service_id)
        if not follow:
            for line in await asyncio.to_thread(service_logs.tail_lines, svc.log_file, tail):
                yield line
            return
        alive = lambda: self._services.get(service_id) is svc  # noqa: E731 - stops at uninstall
        async for line in service_logs.follow_lines(svc.log_file, tail, alive):
            yield line

    async def events(self, service_id: str) -> list[Event]:
        return list(self._get(service_id).events)

    async def suspend(self, service_id: str) -> ServiceStatus:
        svc = self._get(service_id)
        async with svc.lock:
            if svc.phase is not Phase.SUSPENDED:
                await self._cancel_pipeline(svc)
                if svc.process is not None:
                    await self._stop_process(svc)
                self._transition(svc, Phase.SUSPENDED, "Suspended", "stopped; work dir kept")
        return self._status(svc)

    async def resume(self, service_id: str, values: dict[str, Any] | None = None) -> ServiceStatus:
        svc = self._get(service_id)
        async with svc.lock:
            if svc.phase in (Phase.SUSPENDED, Phase.FAILED):
                if values is not None:
                    svc.spec = dataclasses.replace(svc.spec, values=values)
                if svc.process is not None:  # a failed start may leave a process behind
                    await self._stop_process(svc)
                self._add_event(svc, "Resuming", "starting again with the same values")
                self._launch_pipeline(svc)
        return self._status(svc)

    async def uninstall(self, service_id: str) -> None:
        svc = self._services.get(service_id)
        if svc is not None:
            async with svc.lock:
                await self._cancel_pipeline(svc)
                if svc.process is not None:
                    await self._stop_process(svc)
                self._services.pop(service_id, None)
                if svc.env_key:
                    self.envs.touch(svc.env_key, remove=service_id)
        if self.limiter is not None:
            self.limiter.cleanup(service_id)
        directory = self.services_dir / service_id
        if directory.parent == self.services_dir and service_id not in ("", ".", ".."):
            await asyncio.to_thread(shutil.rmtree, directory, True)

    async def list(self) -> list[str]:
        return list(self._services)

    def get_state(self, service_id: str) -> dict[str, Any]:
        return self._get(service_id).to_state()

    async def load_state(self, spec: ServiceSpec, state: dict[str, Any]) -> ServiceStatus:
        self._init()
        state = newer_state(state, read_state_file(self.services_dir / spec.id))
        old = self._services.pop(spec.id, None)
        if old is not None:  # loading twice: forget the previous record's tasks
            await self._cancel_pipeline(old)
            if old.watcher:
                old.watcher.cancel()
        svc = await self._new_record(spec)
        self._make_dirs(svc)
        self._services[spec.id] = svc
        svc.apply_state(state)

        if svc.phase in (Phase.STARTING, Phase.RUNNING):
            await self._reattach(svc)
        elif svc.phase is Phase.BUILDING:
            svc.process = None
            self._fail(svc, "the environment build was interrupted by a platform restart; "
                       "resume the service to try again")  # fmt: skip
        else:
            svc.process = None
            if svc.env_key:
                with contextlib.suppress(BackendError):
                    svc.rendered = self._render(svc, self.envs.root / svc.env_key)
            svc.persist()
        return self._status(svc)

    async def endpoint(self, service_id: str) -> Endpoint | None:
        svc = self._get(service_id)
        if svc.phase not in (Phase.STARTING, Phase.RUNNING) or svc.rendered is None:
            return None
        if svc.rendered.listen == "unix":
            return Endpoint(socket=str(self._socket(svc)))
        return Endpoint(port=svc.port) if svc.port else None

    async def internal_url(self, service_id: str) -> str | None:
        return self._internal_url(service_id) if await self.endpoint(service_id) else None

    def _internal_url(self, service_id: str) -> str:
        return internal_service_url(self.public_url, service_id)

    # -- records ------------------------------------------------------------------------------

    def _get(self, service_id: str) -> ServiceRecord:
        try:
            return self._services[service_id]
        except KeyError:
            raise ServiceNotFound(f"unknown service {service_id!r}") from None

    async def _new_record(self, spec: ServiceSpec) -> ServiceRecord:
        recipe = self._recipe(spec.chart_dir, spec.chart_name)
        reason = _missing_binaries(recipe, spec.chart_name)
        if reason:
            raise BackendError(reason)
        account = await ensure_account(spec.owner) if self.isolate_users else None
        base = self.services_dir / spec.id
        return ServiceRecord(
            spec=spec,
            recipe=recipe,
            resources=Resources.from_values(spec.values),
            env_spec=EnvSpec.from_recipe(recipe.get("environment") or {}),
            workdir=base / "work",
            log_file=base / LOG_NAME,
            account=account,
        )

    def _make_dirs(self, svc: ServiceRecord) -> None:
        if self.isolate_users:
            _check_traversable(self.services_dir)
        base = svc.workdir.parent
        base.mkdir(parents=True, exist_ok=True)
        os.chmod(base, 0o711 if self.isolate_users else 0o700)
        # the work dir, and the directory of its socket: nobody else may enter them
        for private in (svc.workdir, base / SOCKET_DIR):
            private.mkdir(mode=0o700, exist_ok=True)
            if svc.account is not None:
                os.chown(private, svc.account.uid, svc.account.gid)
            os.chmod(private, 0o700)

    def _socket(self, svc: ServiceRecord) -> Path:
        return svc.workdir.parent / SOCKET_DIR / SOCKET_NAME

    def _context(self, svc: ServiceRecord, env_dir: Path) -> dict[str, Any]:
        return {
            "values": svc.spec.values,
            "service": {
                "id": svc.spec.id,
                "owner": svc.spec.owner,
                "project": svc.spec.project,
                "socket": str(self._socket(svc)),
                "socket_dir": str(self._socket(svc).parent),
                "port": svc.port or 0,
                "host": "127.0.0.1",
                "base_url": "/",  # each service has its own origin
                "url": self.service_url(svc.spec.id),
                "internal_url": self._internal_url(svc.spec.id),
                "token": svc.spec.token,
                "workdir": str(svc.workdir),
            },
            "env_dir": str(env_dir),
        }

    def _render(self, svc: ServiceRecord, env_dir: Path) -> RenderedRecipe:
        return render_recipe(svc.recipe, self._context(svc, env_dir))

    def _dry_render(self, svc: ServiceRecord) -> RenderedRecipe:
        """Template errors are the user's (or the chart's) to fix: report them at install."""
        svc.port = 0
        try:
            rendered = self._render(svc, self.envs.root / "<environment>")
        finally:
            svc.port = None
        socket = str(self._socket(svc))
        if rendered.listen == "unix" and len(socket.encode()) > MAX_SOCKET_PATH:
            raise BackendError(
                f"the service's socket path {socket} is longer than the {MAX_SOCKET_PATH} bytes "
                "Unix sockets allow: use a shorter data directory (data_dir)"
            )
        return rendered

    # -- phases -------------------------------------------------------------------------------

    def _add_event(
        self, svc: ServiceRecord, reason: str, message: str, type: str = "Normal"
    ) -> None:
        svc.add_event(Event.now(reason, message, type))
        svc.persist()

    def _transition(
        self, svc: ServiceRecord, phase: Phase, reason: str, message: str, type: str = "Normal"
    ) -> None:
        svc.phase = phase
        svc.reason = message if phase in (Phase.FAILED, Phase.SUSPENDED, Phase.BUILDING) else None
        self._add_event(svc, reason, message, type)

    def _fail(self, svc: ServiceRecord, message: str) -> None:
        self._transition(svc, Phase.FAILED, "Failed", message, "Warning")

    def _status(self, svc: ServiceRecord) -> ServiceStatus:
        rendered = svc.rendered
        return ServiceStatus(
            phase=svc.phase,
            reason=svc.reason,
            urls=[rendered.url] if rendered and rendered.url else [],
            started_at=svc.started_at,
            ready_at=svc.ready_at if svc.phase is Phase.RUNNING else None,
            resources=svc.resources.to_status(),
            password=rendered.password if rendered else None,
            notes=rendered.notes if rendered else "",
        )

    # -- build, start, readiness --------------------------------------------------------------

    def _launch_pipeline(self, svc: ServiceRecord) -> None:
        svc.phase = Phase.BUILDING
        svc.reason = "building environment"
        svc.pipeline = asyncio.get_running_loop().create_task(self._pipeline(svc))

    async def _pipeline(self, svc: ServiceRecord) -> None:
        try:
            self._transition(svc, Phase.BUILDING, "Building", "building environment")
            env = await self.envs.ensure(svc.env_spec, progress=self._progress(svc))
            svc.env_key = env.key
            self.envs.touch(env.key, add=svc.spec.id)
            how = "built" if env.built else "from the cache"
            self._add_event(svc, "EnvironmentReady", f"environment {env.key} {how}")
            for _attempt in range(PORT_ATTEMPTS):
                self._start_process(svc, env)
                outcome = await self._await_ready(svc)
                if outcome == "ready":
                    svc.ready_at = datetime.now(UTC)
                    self._transition(svc, Phase.RUNNING, "Ready", "ready")
                    return
                if outcome == "timeout":
                    timeout = self._readiness_timeout(svc)
                    await self._stop_process(svc)
                    self._fail(
                        svc,
                        f"not ready after {timeout:g} s (readiness timeout)"
                        + self._last_lines(svc),
                    )
                    return
                # the process died while starting: another program took its port?
                port = svc.port
                await self._stop_process(svc)  # its leftovers, if any
                if port is not None and not port_is_free(port):
                    self._add_event(
                        svc, "PortInUse", f"port {port} was taken by another program; retrying "
                        "on another port", "Warning",
                    )  # fmt: skip
                    svc.port = None
                    continue
                self._fail(svc, describe_exit(svc.returncode) + self._last_lines(svc))
                return
            self._fail(svc, f"could not find a free port in {PORT_ATTEMPTS} attempts")
        except EnvBuildError as exc:
            self._fail(svc, str(exc))
        except BackendError as exc:
            await self._stop_process(svc)
            self._fail(svc, str(exc))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug: keep the platform up, show it on the service
            log.exception("service %s failed to start", svc.spec.id)
            await self._stop_process(svc)
            self._fail(svc, f"internal error while starting: {type(exc).__name__}: {exc}")

    def _progress(self, svc: ServiceRecord) -> Any:
        def report(phase: str, percent: float, message: str) -> Any:
            if svc.phase is Phase.BUILDING:
                svc.reason = f"building environment: {message} ({percent:.0f}%)"
            if self.on_build_progress is not None:
                return self.on_build_progress(svc.spec.id, phase, percent, message)
            return None

        return report

    def _readiness_timeout(self, svc: ServiceRecord) -> float:
        if self.readiness_timeout_s is not None:
            return self.readiness_timeout_s
        return svc.rendered.readiness_timeout_s if svc.rendered else 180.0

    def _allocate_port(self, svc: ServiceRecord) -> int:
        """The service's previous port if still free (stable URLs for tools that cache them),
        else a new free one; never a port another service of ours holds."""
        taken = {s.port for s in self._services.values() if s is not svc and s.port}
        if svc.port and svc.port not in taken and port_is_free(svc.port):
            return svc.port
        return free_port(exclude=taken)

    def _start_process(self, svc: ServiceRecord, env: Env) -> None:
        assert self.limiter is not None
        unix = svc.recipe.get("listen", "tcp") == "unix"
        svc.port = None if unix else self._allocate_port(svc)
        if unix:  # a socket left by a previous run would refuse the new bind
            self._socket(svc).unlink(missing_ok=True)
        svc.rendered = rendered = self._render(svc, env.path)
        where = f"socket {self._socket(svc)}" if unix else f"port {svc.port}"
        argv = [resolve_command(rendered.command[0], str(env.bin_dir), SYSTEM_PATH)]
        argv += rendered.command[1:]
        account = svc.account.name if svc.account else _current_user()
        environ = {
            "PATH": f"{env.bin_dir}:{SYSTEM_PATH}",
            "HOME": str(svc.workdir),
            "USER": account,
            "LOGNAME": account,
            "SHELL": "/bin/bash",
            "LANG": "C.UTF-8",
            "VIRTUAL_ENV": str(env.path),
            "PYTHONUNBUFFERED": "1",
            **rendered.env,
        }
        if rendered.vault_env is not None:
            # read by the launcher (never in argv: /proc/<pid>/cmdline is world-readable)
            environ[VAULT_ENV_VARIABLE] = json.dumps(dataclasses.asdict(rendered.vault_env))
        try:
            confinement = self.limiter.prepare(svc.spec.id, svc.resources)
        except OSError as exc:
            raise BackendError(
                f"cannot apply the resource limits ({self.limiter.name}): {exc}"
            ) from None
        service_logs.append_line(
            svc.log_file,
            f"----- datalab {datetime.now(UTC).isoformat(timespec='seconds')}: starting "
            f"{_short_command(rendered.command)} on {where} -----",
        )
        svc.exited = asyncio.Event()
        svc.returncode = None
        svc.process = ref = spawn(
            argv,
            env=environ,
            cwd=svc.workdir,
            log_file=svc.log_file,
            confinement=confinement,
            uid=svc.account.uid if svc.account else None,
            gid=svc.account.gid if svc.account else None,
        )
        svc.started_at = datetime.now(UTC)
        svc.ready_at = None
        self._transition(svc, Phase.STARTING, "Started", f"process {ref.pid} started on {where}")
        if rendered.readiness_http:
            probe = rendered.readiness_http
        elif rendered.readiness_unix:
            probe = f"socket {rendered.readiness_unix}"
        else:
            probe = where if unix else f"port {rendered.readiness_tcp or svc.port}"
        svc.reason = f"waiting until ready ({probe})"
        svc.watcher = asyncio.get_running_loop().create_task(self._watch(svc, ref))

    async def _await_ready(self, svc: ServiceRecord) -> str:
        """ "ready", "died" or "timeout"."""
        assert svc.rendered is not None
        rendered, port = svc.rendered, svc.port
        socket = str(self._socket(svc)) if rendered.listen == "unix" else None
        assert socket is not None or port is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._readiness_timeout(svc)
        transport = httpx.AsyncHTTPTransport(uds=socket)
        base = "http://localhost" if socket else f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(transport=transport, timeout=2, trust_env=False) as client:
            while True:
                if svc.exited.is_set():
                    return "died"
                if rendered.readiness_http is not None:
                    ready = await probe_http(client, base + rendered.readiness_http)
                elif socket is not None:
                    ready = await probe_unix(rendered.readiness_unix or socket)
                else:
                    assert port is not None
                    ready = await probe_tcp(rendered.readiness_tcp or port)
                # on a port, the answer may come from a program that took it first
                squatted = port is not None and await self._squatted(svc, port)
                if ready and not svc.exited.is_set() and not squatted:
                    return "ready"
                if loop.time() >= deadline:
                    return "timeout"
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(svc.exited.wait(), 0.1)

    async def _squatted(self, svc: ServiceRecord, port: int) -> bool:
        ref = svc.process
        return ref is not None and await asyncio.to_thread(port_squatted, ref, port)

    async def _watch(self, svc: ServiceRecord, ref: ProcessRef) -> None:
        """Notices the end of the process the moment it happens (pidfd), whatever the cause."""
        returncode = await wait_exit(ref)
        if svc.process is not ref:
            return
        svc.returncode = returncode
        svc.exited.set()
        if svc.stopping:
            return
        service_logs.append_line(svc.log_file, f"----- datalab: {describe_exit(returncode)} -----")
        if svc.phase is Phase.RUNNING:
            assert self.limiter is not None
            self._fail(svc, describe_exit(returncode) + self._last_lines(svc))
            # what it started (kernels, workers) must not outlive it
            await terminate(ref, 1.0, self.limiter.pids(svc.spec.id))
            self.limiter.cleanup(svc.spec.id)
            svc.process = None
            svc.persist()

    async def _stop_process(self, svc: ServiceRecord) -> None:
        """SIGTERM the service's processes, SIGKILL after the grace period; wait for the end."""
        ref = svc.process
        if ref is None:
            return
        assert self.limiter is not None
        svc.stopping = True
        try:
            await terminate(ref, self.stop_grace_s, self.limiter.pids(svc.spec.id))
            if svc.watcher is not None and not svc.watcher.done():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(svc.watcher), 5)
            self.limiter.cleanup(svc.spec.id)
            service_logs.append_line(svc.log_file, "----- datalab: stopped -----")
        finally:
            svc.stopping = False
            svc.process = None
            svc.persist()

    async def _cancel_pipeline(self, svc: ServiceRecord) -> None:
        task, svc.pipeline = svc.pipeline, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _last_lines(self, svc: ServiceRecord) -> str:
        lines = [
            line
            for line in service_logs.tail_lines(svc.log_file, FAILURE_LOG_LINES + 5)
            if not line.startswith("----- datalab")
        ][-FAILURE_LOG_LINES:]
        return "; last log lines:\n" + "\n".join(lines) if lines else " (the log is empty)"

    # -- restart ------------------------------------------------------------------------------

    async def _reattach(self, svc: ServiceRecord) -> None:
        ref = svc.process
        env_dir = self.envs.root / (svc.env_key or "")
        if ref is not None and ref.is_alive() and svc.env_key and env_dir.is_dir():
            svc.rendered = self._render(svc, env_dir)
            self._add_event(svc, "Reattached", f"process {ref.pid} still running")
            svc.watcher = asyncio.get_running_loop().create_task(self._watch(svc, ref))
            if svc.phase is Phase.STARTING:
                svc.pipeline = asyncio.get_running_loop().create_task(self._finish_start(svc))
            return
        if ref is not None and ref.is_alive():  # alive but its environment vanished
            await self._stop_process(svc)
        elif ref is not None:
            assert self.limiter is not None
            await terminate(ref, 1.0, self.limiter.pids(svc.spec.id))  # orphans, if any
            self.limiter.cleanup(svc.spec.id)
        svc.process = None
        self._fail(svc, "the process was no longer running when the platform restarted")

    async def _finish_start(self, svc: ServiceRecord) -> None:
        outcome = await self._await_ready(svc)
        if outcome == "ready":
            svc.ready_at = datetime.now(UTC)
            self._transition(svc, Phase.RUNNING, "Ready", "ready")
        elif outcome == "timeout":
            await self._stop_process(svc)
            self._fail(svc, "not ready after the platform restart (readiness timeout)")
        else:
            self._fail(svc, describe_exit(svc.returncode) + self._last_lines(svc))


def _missing_binaries(recipe: dict[str, Any], chart_name: str) -> str | None:
    environment = recipe.get("environment") or {}
    missing = [b for b in environment.get("requires_binaries") or [] if not _installed(b)]
    if missing:
        return (
            f"chart {chart_name!r} needs {', '.join(missing)}, not found on this machine "
            "(programs are looked up on PATH; an administrator installs them)"
        )
    return None


def _installed(binary: str) -> bool:
    """A program on PATH, or an absolute path (glob patterns allowed: Debian installs
    PostgreSQL's server in /usr/lib/postgresql/<major>/bin) naming an executable file."""
    if not binary.startswith("/"):
        return shutil.which(binary) is not None
    return any(os.path.isfile(p) and os.access(p, os.X_OK) for p in glob.glob(binary))


def _localhost_origin(public_url: str) -> Callable[[str], str]:
    """``<id>.localhost`` with the platform's scheme and port (browsers resolve every
    ``*.localhost`` name to loopback)."""
    parts = urlsplit(public_url)
    port = f":{parts.port}" if parts.port else ""
    return lambda service_id: f"{parts.scheme}://{service_id}.localhost{port}/"


def _check_traversable(directory: Path) -> None:
    """Service accounts must be able to reach their work dir and the environments."""
    for parent in [directory, *directory.parents]:
        if not parent.stat().st_mode & stat.S_IXOTH:
            raise BackendError(
                f"per-user isolation: the services' accounts cannot enter {parent} (mode "
                f"{stat.S_IMODE(parent.stat().st_mode):o}). Run 'chmod o+x {parent}' (others may "
                "then pass through it, not list it), or use a data directory such as "
                "/var/lib/datalab"
            )


def _short_command(argv: list[str]) -> str:
    text = shlex.join(argv).replace("\n", "\\n")
    return text if len(text) <= 200 else text[:197] + "..."


def _current_user() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())
