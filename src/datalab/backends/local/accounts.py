"""One unprivileged system account per platform user (``datalab-<user>``), created on demand.

Used when the platform runs as root: a service runs under its owner's account, its work dir is
that account's and mode 700, so one user's notebook cannot read another user's files.
"""

from __future__ import annotations

import asyncio
import hashlib
import pwd
import re
import shutil
from dataclasses import dataclass

from datalab.errors import BackendError

PREFIX = "datalab-"
_MAX_LENGTH = 32  # useradd's limit
_VALID = re.compile(r"^[a-z_][a-z0-9_-]*$")


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int


def account_name(user: str) -> str:
    """``datalab-<user>``, made a valid, unique system user name: a name that had to be changed
    (case, characters, length) gets a hash suffix so that two users never share an account."""
    slug = re.sub(r"[^a-z0-9_-]+", "-", user.lower()).strip("-") or "user"
    name = PREFIX + slug
    if slug != user or len(name) > _MAX_LENGTH or not _VALID.match(name):
        digest = hashlib.sha256(user.encode()).hexdigest()[:8]
        name = f"{PREFIX}{slug[: _MAX_LENGTH - len(PREFIX) - 9]}-{digest}"
    return name


_lock = asyncio.Lock()


async def ensure_account(user: str) -> Account:
    """The account for ``user``, created with ``useradd --system`` if it does not exist yet."""
    name = account_name(user)
    async with _lock:
        if not _exists(name):
            useradd = shutil.which("useradd") or "/usr/sbin/useradd"
            process = await asyncio.create_subprocess_exec(
                useradd, "--system", "--user-group", "--no-create-home",
                "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
                "--comment", f"datalab services of {user}", name,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            output, _ = await process.communicate()
            if process.returncode != 0 and not _exists(name):
                raise BackendError(
                    f"cannot create the system account {name!r} for user {user!r}: "
                    + output.decode(errors="replace").strip()
                )
        entry = pwd.getpwnam(name)
    return Account(name=name, uid=entry.pw_uid, gid=entry.pw_gid)


def _exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False
