"""Supervision of an embedded server process (SeaweedFS, OpenBao): start it, wait until it is
healthy, restart it with exponential backoff when it dies, stop it cleanly.

The process runs in its own session (so a signal to its group reaches every child) with its
output appended to a log file in the data directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from datalab.files import PLATFORM_UMASK

log = logging.getLogger(__name__)

HealthCheck = Callable[[], Awaitable[bool]]
RestartHook = Callable[[], Awaitable[None]]


class EmbeddedServerError(Exception):
    """An embedded server did not start or become healthy; the message says why."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def last_lines(path: Path, count: int = 15) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 8192))
            lines = handle.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-count:])


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
