"""Starting, identifying, watching and stopping service processes.

A service process is spawned with ``posix_spawn`` (no ``Popen`` object to outlive it: services
may survive the platform) in a new session, through :mod:`._launcher`. It is identified by its
pid *and* its start time, so that a pid reused by an unrelated process after a restart is never
mistaken for the service, never re-attached and never killed. Ports and readiness probes are in
:mod:`datalab.processes` (shared with the embedded servers).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path

import psutil

from datalab.backends.local.limits import Confinement

LAUNCHER = Path(__file__).with_name("_launcher.py")
#: environment variable through which the launcher gets the Vault secrets to turn into
#: environment variables (JSON of ``recipe.VaultEnv``); the launcher removes it
VAULT_ENV_VARIABLE = "DATALAB_VAULT_ENV"


@dataclass(frozen=True)
class ProcessRef:
    """A process, as pid + start time (seconds since the epoch, as psutil reports it)."""

    pid: int
    create_time: float

    def is_alive(self) -> bool:
        """True if the process still runs and is the same one (not a reused pid, not a zombie)."""
        try:
            process = psutil.Process(self.pid)
            return (
                abs(process.create_time() - self.create_time) < 0.05
                and process.status() != psutil.STATUS_ZOMBIE
            )
        except psutil.Error:
            return False


def spawn(
    argv: list[str],
    *,
    env: dict[str, str],
    cwd: Path,
    log_file: Path,
    confinement: Confinement,
    uid: int | None,
    gid: int | None,
) -> ProcessRef:
    """Start ``argv`` in a new session, stdin from /dev/null, stdout+stderr appended to
    ``log_file``, confined and under ``uid``/``gid`` (None: the platform's own account)."""
    config = {
        "argv": argv,
        "cwd": str(cwd),
        "cgroups": list(confinement.cgroup_procs),
        "rlimit_as": confinement.rlimit_as,
        "cpus": list(confinement.cpus),
        "uid": uid,
        "gid": gid,
    }
    log_fd = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        pid = os.posix_spawn(
            sys.executable,
            [sys.executable, "-I", "-S", str(LAUNCHER), json.dumps(config)],
            env,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, log_fd, 1),
                (os.POSIX_SPAWN_DUP2, log_fd, 2),
            ],
            setsid=True,
        )
    finally:
        os.close(log_fd)
    try:
        create_time = psutil.Process(pid).create_time()
    except psutil.Error:  # already gone: the watcher reports it
        create_time = time.time()
    return ProcessRef(pid, create_time)


async def wait_exit(ref: ProcessRef) -> int | None:
    """Wait until the process ends, without polling (a pidfd wakes the event loop), and reap it
    if it is our child. Returns its exit status as ``Popen.returncode`` would (negative: killed
    by that signal), or None when it was not our child (re-attached after a restart)."""
    loop = asyncio.get_running_loop()
    try:
        pidfd = os.pidfd_open(ref.pid)
    except ProcessLookupError:
        return _reap(ref.pid)
    try:
        if ref.is_alive():
            exited: asyncio.Future[None] = loop.create_future()

            def on_exit() -> None:
                if not exited.done():
                    exited.set_result(None)

            loop.add_reader(pidfd, on_exit)
            try:
                await exited
            finally:
                loop.remove_reader(pidfd)
    finally:
        os.close(pidfd)
    return _reap(ref.pid)


def _reap(pid: int) -> int | None:
    try:
        waited, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    if waited == 0:  # pragma: no cover - only when the pidfd woke us for another reason
        return None
    return os.waitstatus_to_exitcode(status)


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "the process ended (exit status unknown: it was started before a platform restart)"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"the process was killed by {name}"
    return f"the process exited with code {returncode}"


def tree(ref: ProcessRef, extra_pids: AbstractSet[int] = frozenset()) -> list[psutil.Process]:
    """The service's processes: its session (process group leader and everything in it), every
    descendant (even those that started their own session, like Jupyter kernels) and the pids
    its cgroup reports (which catches orphans re-parented away)."""
    found: dict[int, psutil.Process] = {}
    if ref.is_alive():
        main = psutil.Process(ref.pid)
        found[main.pid] = main
        with contextlib.suppress(psutil.Error):
            for child in main.children(recursive=True):
                found[child.pid] = child
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            # pid == ref.pid here means the pid was reused: never touch that process
            if (
                process.pid not in found
                and process.pid != ref.pid
                and os.getsid(process.pid) == ref.pid
            ):
                found[process.pid] = process
    for pid in extra_pids:
        with contextlib.suppress(psutil.Error):
            found.setdefault(pid, psutil.Process(pid))
    return list(found.values())


async def terminate(
    ref: ProcessRef,
    grace_s: float,
    extra_pids: AbstractSet[int] = frozenset(),
) -> None:
    """SIGTERM every process of the service, SIGKILL what is left after ``grace_s``."""
    processes = tree(ref, extra_pids)
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, alive = await asyncio.to_thread(psutil.wait_procs, processes, timeout=grace_s)
    for process in alive + tree(ref, extra_pids):
        with contextlib.suppress(psutil.Error):
            process.kill()
    await asyncio.to_thread(psutil.wait_procs, processes, timeout=5)
    _reap_quietly(ref.pid)


def _reap_quietly(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def port_squatted(ref: ProcessRef, port: int) -> bool:
    """Whether the port is held by a program that was there before the service started (the
    probe would then succeed against the wrong server, while the service fails to bind).

    A listener the service started itself, even one that left its session (a daemon), is
    younger than the service and so not a squatter. Unknown owners (no permission) are
    trusted."""
    try:
        connections = psutil.net_connections(kind="inet")
    except psutil.Error:
        return False
    for connection in connections:
        if connection.status != psutil.CONN_LISTEN or connection.laddr.port != port:
            continue
        if connection.pid is None or connection.pid == ref.pid:
            continue
        try:
            if psutil.Process(connection.pid).create_time() < ref.create_time - 0.05:
                return True
        except psutil.Error:
            continue
    return False
