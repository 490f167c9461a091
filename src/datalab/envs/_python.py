"""Finding a Python interpreter on this machine for a recipe's ``environment.python``.

When services run under unprivileged accounts the interpreter a venv links to must be readable
by them: one under ``/root`` (pyenv, for instance) is not, so ``shared=True`` skips such ones.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

from datalab.envs._uv import run_uv


@dataclass(frozen=True)
class Interpreter:
    path: str  # as given to ``uv venv --python``
    version: str  # full version, e.g. "3.11.2"


def matches(version: str, request: str) -> bool:
    """``"3.11.2"`` matches the requests ``"3"``, ``"3.11"`` and ``"3.11.2"``."""
    return version.split(".")[: len(request.split("."))] == request.split(".")


def world_accessible(path: str | os.PathLike[str]) -> bool:
    """Whether any user can execute ``path``: every directory above it is traversable by others,
    and the file (after symlinks) is readable and executable by others."""
    real = Path(os.path.realpath(path))
    try:
        mode = real.stat().st_mode
        if not (mode & stat.S_IROTH and mode & stat.S_IXOTH):
            return False
        return all(parent.stat().st_mode & stat.S_IXOTH for parent in real.parents)
    except OSError:
        return False


def _own_interpreter() -> Interpreter:
    """The interpreter the platform runs on (its base, when the platform runs in a venv)."""
    base = getattr(sys, "_base_executable", sys.executable)
    return Interpreter(os.path.realpath(base), ".".join(map(str, sys.version_info[:3])))


async def find_interpreter(
    request: str | None, *, shared: bool, uv: str, env: dict[str, str], cwd: Path
) -> Interpreter:
    """The first interpreter matching ``request`` (default: this platform's ``major.minor``),
    preferring the platform's own, then uv's discovery order (PATH)."""
    wanted = request or f"{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [_own_interpreter()]
    result = await run_uv(
        [uv, "python", "list", "--only-installed", "--output-format", "json", "--no-config",
         "--python-preference", "only-system", "--color", "never"],
        env=env,
        cwd=cwd,
    )  # fmt: skip
    if result.returncode == 0:
        for entry in json.loads(result.stdout or "[]"):
            candidates.append(Interpreter(entry["path"], entry["version"]))
    found = [c for c in candidates if matches(c.version, wanted)]
    usable = [c for c in found if world_accessible(c.path)] if shared else found
    if usable:
        return usable[0]
    if found:
        raise LookupError(
            f"no Python {wanted} usable by the unprivileged service accounts: "
            + ", ".join(c.path for c in found)
            + " sit(s) in directories other users cannot enter; install Python "
            f"{wanted} system-wide (e.g. /usr/bin/python{wanted})"
        )
    versions = sorted({c.version for c in candidates})
    raise LookupError(f"no Python {wanted} on this machine (found: {', '.join(versions)})")
