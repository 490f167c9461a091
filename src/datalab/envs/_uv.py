"""Running uv: where its binary is, a clean environment for it, and a cancellable runner that
streams its output lines as they come (uv reports its phases on stderr)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

# Variables that would point uv at the platform's own environment or project instead of the
# environment being built.
_UNSET = ("VIRTUAL_ENV", "CONDA_PREFIX", "UV_PROJECT_ENVIRONMENT", "PYTHONHOME", "PYTHONPATH")


def find_uv() -> str:
    """The uv binary shipped with the ``uv`` package (a platform dependency), else PATH's."""
    try:
        from uv import find_uv_bin

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        return str(Path(sys.executable).with_name("uv"))


def uv_environ(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The platform's environment (proxy and UV_* index settings apply) minus what would
    redirect uv, with interpreter downloads disabled: only this machine's Pythons are used."""
    env = {k: v for k, v in os.environ.items() if k not in _UNSET}
    env.update({"UV_PYTHON_DOWNLOADS": "never", "NO_COLOR": "1", "UV_NO_PROGRESS": "1"})
    env.update(extra or {})
    return env


@dataclass(frozen=True)
class UvResult:
    returncode: int
    stdout: str
    stderr: str


async def run_uv(
    argv: Sequence[str],
    *,
    env: dict[str, str],
    cwd: Path,
    stdin: bytes | None = None,
    on_line: Callable[[str], None] | None = None,
    umask: int = -1,
) -> UvResult:
    """Run uv to completion; each stderr line goes to ``on_line`` as it arrives. ``umask``:
    the one uv creates files with (default: the platform's).

    Cancellation (e.g. a build timeout) kills uv's whole process group before re-raising, so
    no installer is left running behind a failed build.
    """
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=cwd,
        start_new_session=True,
        # (uvloop's subprocesses take no ``umask`` argument)
        preexec_fn=None if umask < 0 else functools.partial(os.umask, umask),
    )
    assert process.stdout is not None and process.stderr is not None
    err_lines: list[str] = []

    async def read_stderr() -> None:
        assert process.stderr is not None
        async for raw in process.stderr:
            line = raw.decode(errors="replace").rstrip()
            err_lines.append(line)
            if on_line and line.strip():
                on_line(line.strip())

    async def feed_stdin() -> None:
        if stdin is not None and process.stdin is not None:
            process.stdin.write(stdin)
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                await process.stdin.drain()
            process.stdin.close()

    try:
        stdout, _, _ = await asyncio.gather(process.stdout.read(), read_stderr(), feed_stdin())
        returncode = await process.wait()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        raise
    return UvResult(returncode, stdout.decode(errors="replace"), "\n".join(err_lines))
