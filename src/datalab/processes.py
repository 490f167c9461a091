"""Processes the platform starts and the ports they listen on, shared by the embedded servers
(SeaweedFS, OpenBao) and the local backend: free loopback ports, readiness probes, finding a
program installed with the environment, the end of a log, and the supervisor of the embedded
servers.

Two kinds of processes, on purpose supervised differently:

- an *embedded server* (:class:`SupervisedProcess`) is the platform's own: an asyncio child in
  its own session that dies with the platform (``PR_SET_PDEATHSIG``), restarted with exponential
  backoff when it exits, stopped with SIGTERM then SIGKILL to its process group;
- a *service* (:mod:`datalab.backends.local.process`) is a user's: spawned through a launcher
  that confines it, identified by pid and start time, and it may outlive the platform, which
  re-attaches to it after a restart; its backend reports its exit instead of restarting it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import logging
import os
import random
import shutil
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from pathlib import Path

import httpx

from datalab.errors import EmbeddedServerError
from datalab.files import PLATFORM_UMASK

log = logging.getLogger(__name__)

HealthCheck = Callable[[], Awaitable[bool]]
RestartHook = Callable[[], Awaitable[None]]


# -- ports and probes --------------------------------------------------------------------------


EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LISTEN_PORTS_FLOOR = 20000


def listen_port_range() -> range:
    """Ports to listen on: below the kernel's ephemeral range, where the source ports of
    outgoing connections are taken. A port chosen inside it can be taken a moment later by any
    connection (SeaweedFS's own components connect to each other as they start), and then the
    server that was to listen on it fails."""
    try:
        ephemeral_low = int(EPHEMERAL_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    if ephemeral_low - LISTEN_PORTS_FLOOR < 1000:  # an unusual kernel setting: the low ports
        return range(10000, 20000)
    return range(LISTEN_PORTS_FLOOR, ephemeral_low)


# the ports handed out lately by this process, not yet listened on maybe: not twice
_handed_out: collections.deque[int] = collections.deque(maxlen=1024)


def free_port(exclude: Collection[int] = ()) -> int:
    """A loopback port nobody listens on or connects from now, outside the ephemeral range
    (:func:`listen_port_range`), and not in ``exclude``."""
    candidates = listen_port_range()
    for _ in range(200):
        port = random.choice(candidates)
        if port not in exclude and port not in _handed_out and _bindable(port):
            _handed_out.append(port)
            return port
    raise RuntimeError(f"no free loopback port found in {candidates.start}-{candidates.stop - 1}")


def _bindable(port: int) -> bool:
    """No socket uses the port at all (no SO_REUSEADDR: a connection's port counts too)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def port_is_free(port: int) -> bool:
    """Nobody listens on it. SO_REUSEADDR as servers set it: TIME_WAIT leftovers of closed
    connections do not make a port busy."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def probe_http(client: httpx.AsyncClient, url: str) -> bool:
    """Ready when the URL answers 2xx/3xx, or 401/403 (up, but wants credentials)."""
    try:
        response = await client.get(url)
    except httpx.HTTPError:
        return False
    return response.status_code < 400 or response.status_code in (401, 403)


async def _accepts(
    connecting: Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]],
) -> bool:
    """Whether the connection opens within 2 s (it is closed at once)."""
    try:
        _, writer = await asyncio.wait_for(connecting, 2)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def probe_unix(path: str) -> bool:
    return await _accepts(asyncio.open_unix_connection(path))


async def probe_tcp(port: int) -> bool:
    return await _accepts(asyncio.open_connection("127.0.0.1", port))


# -- programs and logs -------------------------------------------------------------------------


def find_program(name: str, *, package: str) -> str:
    """The executable ``name`` installed with the platform's environment (beside its Python,
    e.g. by the PyPI package ``package``), else the one on PATH."""
    beside_python = Path(sys.executable).parent / name
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(
            f"the {name!r} program (PyPI package {package}) is not installed; run `make setup`"
        )
    return found


def last_lines(path: Path, count: int = 15) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 8192))
            lines = handle.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-count:])


# -- the embedded servers' supervisor ----------------------------------------------------------


def _prepare_child() -> None:
    """In the child, before exec: its data, sockets and logs are the platform's alone (umask;
    uvloop's subprocesses take no ``umask`` argument), and it gets SIGTERM if the platform dies
    without stopping it (killed, crashed), so no embedded server is left behind holding its
    ports and data (Linux only)."""
    os.umask(PLATFORM_UMASK)
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


PR_SET_PDEATHSIG = 1


class SupervisedProcess:
    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        health: HealthCheck,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        ready_timeout_s: float = 60.0,
        stop_grace_s: float = 5.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        check_interval_s: float = 1.0,
        on_restart: RestartHook | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.health = health
        self.cwd = cwd
        self.env = env
        self.ready_timeout_s = ready_timeout_s
        self.stop_grace_s = stop_grace_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.check_interval_s = check_interval_s
        self.on_restart = on_restart
        self.restarts = 0
        self._process: asyncio.subprocess.Process | None = None
        self._monitor: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def start(self) -> None:
        """Start the process and wait until it is healthy, then watch it."""
        self._stopping = False
        await self._spawn_and_wait()
        self._monitor = asyncio.create_task(self._watch(), name=f"supervise-{self.name}")

    async def _spawn(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            self._process = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=fd,
                stderr=fd,
                cwd=self.cwd,
                env=self.env,
                start_new_session=True,
                preexec_fn=_prepare_child,
            )
        finally:
            os.close(fd)
        log.info("%s started (pid %s)", self.name, self._process.pid)

    async def _spawn_and_wait(self) -> None:
        await self._spawn()
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.returncode is not None:
                raise EmbeddedServerError(
                    f"{self.name} exited with code {self._process.returncode} at start; "
                    f"last lines of {self.log_path}:\n{last_lines(self.log_path)}"
                )
            if await self._healthy():
                return
            await asyncio.sleep(0.2)
        await self._terminate()
        raise EmbeddedServerError(
            f"{self.name} was not healthy after {self.ready_timeout_s:.0f} s; last lines of "
            f"{self.log_path}:\n{last_lines(self.log_path)}"
        )

    async def _healthy(self) -> bool:
        try:
            return await self.health()
        except Exception:  # a health probe failing is the answer "not healthy"
            return False

    async def _watch(self) -> None:
        backoff = self.backoff_initial_s
        while not self._stopping:
            await asyncio.sleep(self.check_interval_s)
            process = self._process
            if process is None or process.returncode is None:
                continue
            log.warning(
                "%s exited with code %s; restarting in %.1f s",
                self.name,
                process.returncode,
                backoff,
            )
            await asyncio.sleep(backoff)
            if self._stopping:
                return
            try:
                await self._spawn_and_wait()
                if self.on_restart is not None:
                    await self.on_restart()
            except Exception as exc:  # keep trying, slower each time
                log.error("%s restart failed: %s", self.name, exc)
                backoff = min(backoff * 2, self.backoff_max_s)
                continue
            self.restarts += 1
            backoff = self.backoff_initial_s
            log.info("%s restarted (pid %s)", self.name, self.pid)

    async def stop(self) -> None:
        self._stopping = True
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
            self._monitor = None
        await self._terminate()

    async def _terminate(self) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), self.stop_grace_s)
        except TimeoutError:
            log.warning("%s did not stop in %.0f s; killing it", self.name, self.stop_grace_s)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        log.info("%s stopped", self.name)


def local_address(listen_address: str) -> str:
    """How this machine reaches a server of its own listening on ``listen_address``: loopback
    for a wildcard (0.0.0.0, ::), else that address (IPv6 in brackets, for URLs)."""
    import ipaddress

    address = ipaddress.ip_address(listen_address)
    if address.is_unspecified:
        return "127.0.0.1" if address.version == 4 else "[::1]"
    return f"[{address}]" if address.version == 6 else str(address)
