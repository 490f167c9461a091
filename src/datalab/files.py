"""Files the platform writes are the platform's alone.

Services run on the same machine under other accounts, and everything the platform and its
embedded servers keep in the data directory (the database and its -wal/-shm files, keys,
object bytes, logs, configuration) holds someone's data or credentials. So the platform runs
with ``umask 077`` (:data:`PLATFORM_UMASK`, set by :meth:`datalab.platform.Platform.create`),
its private directories are 0700 whatever the umask was when they were made, and secrets are
written 0600 from their first byte. The exceptions are explicit where they are made: the data
directory and the services' directories are 0711 (accounts pass through to their own work
directory), and the shared environments are 0755 (services run their interpreters).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

PLATFORM_UMASK = 0o077


def private_dir(path: Path) -> Path:
    """``path`` as a directory only the platform's account can enter (0700)."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def write_private(path: Path, data: bytes | str) -> None:
    """Write a file readable by the platform's account only (0600 from its creation),
    replacing any previous content atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def read_or_create_secret(path: Path, nbytes: int = 32) -> str:
    """A random secret kept in ``path`` (0600), generated the first time."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(nbytes)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    return value
