"""The secrets API's operations on the KV v2 tree, with the *caller's own* Vault token (from
the JWT login), so Vault itself enforces who reaches what; the platform checks paths first to
give clear errors.

Paths are ``<top>/<rest>``: ``<top>`` is the caller's personal project (``user-alice``) or the
project they act in (``project-sandbox``). A secret is a set of ``KEY: value`` pairs whose keys
are environment variable names, so that it can become ``export KEY=value`` lines or a
service's environment. Values are never logged nor put in error messages.
"""

from __future__ import annotations

import builtins  # the classes below have a method named list
import re
import shlex
import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

from datalab.errors import Conflict, Forbidden, InvalidInput, NotFound, VaultDenied
from datalab.identity.access import Principal, may_use_space, spaces
from datalab.names import check_key
from datalab.secrets.service import SecretsService, VaultToken

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_VALUE_BYTES = 64 * 1024
REFRESH_MARGIN_S = 60


def export_lines(data: dict[str, str]) -> str:
    """``export KEY=value`` lines, values quoted for POSIX shells."""
    return "".join(f"export {k}={shlex.quote(str(v))}\n" for k, v in sorted(data.items()))


def check_data(data: dict[str, Any]) -> dict[str, str]:
    if not data:
        raise InvalidInput("a secret needs at least one KEY: value pair")
    checked = {}
    for key, value in data.items():
        if not ENV_NAME.match(key):
            raise InvalidInput(
                f"secret key {key!r} is not valid: use letters, digits and '_', not starting "
                "with a digit (it becomes an environment variable name)"
            )
        if not isinstance(value, str | int | float | bool):
            raise InvalidInput(f"the value of {key!r} must be a string or a number")
        text = str(value)
        try:
            encoded = text.encode()
        except UnicodeEncodeError:  # a lone surrogate ("\ud800" in JSON): not text
            raise InvalidInput(f"the value of {key!r} is not valid Unicode text") from None
        if len(encoded) > MAX_VALUE_BYTES:
            raise InvalidInput(f"the value of {key!r} is larger than {MAX_VALUE_BYTES} bytes")
        checked[key] = text
    return checked


class SecretDirectory(BaseModel):
    path: str = Field(description="The directory ('' for the top).")
    entries: builtins.list[str] = Field(description="Secrets, and directories (ending with /).")


class Secret(BaseModel):
    path: str
    data: dict[str, Any] = Field(description="KEY: value pairs.")
    version: int
    updated_at: str = Field(description="When this version was written (Vault's RFC 3339).")


class SecretWritten(BaseModel):
    path: str
    version: int = Field(description="The version written.")
    keys: builtins.list[str] = Field(description="Its keys (not its values).")


class SecretDeleted(BaseModel):
    path: str
    deleted: bool


class SecretRenamed(BaseModel):
    path: str = Field(description="The new path.")
    renamed_from: str


class SecretStore:
    def __init__(
        self,
        service: SecretsService,
        personal_project: Callable[[str], str],
        shared_projects: Callable[[str], list[str]],
    ) -> None:
        self.service = service
        self._personal_project = personal_project
        self._shared_projects = shared_projects
        self._tokens: dict[tuple[str, tuple[str, ...]], tuple[VaultToken, float]] = {}

    def shared_projects(self, user_name: str) -> builtins.list[str]:
        """The shared projects whose secret directories the user's tokens reach."""
        return self._shared_projects(user_name)

    def _cache_key(self, principal: Principal) -> tuple[str, tuple[str, ...]]:
        return (principal.name, tuple(sorted(self._shared_projects(principal.name))))

    async def _token(self, principal: Principal) -> str:
        cache_key = self._cache_key(principal)
        shared = cache_key[1]
        cached = self._tokens.get(cache_key)
        if cached is None or cached[1] - time.monotonic() < REFRESH_MARGIN_S:
            token = await self.service.user_token(principal.name, list(shared))
            cached = (token, time.monotonic() + token.ttl_s)
            self._tokens[cache_key] = cached
        return cached[0].token

    def forget(self, user_name: str) -> None:
        """Drop the cached tokens of ``user_name`` (they were revoked)."""
        for key in [k for k in self._tokens if k[0] == user_name]:
            del self._tokens[key]

    def tops(self, principal: Principal) -> builtins.list[str]:
        """The top directories the principal may use (:func:`datalab.identity.access.spaces`)."""
        return spaces(principal, self._personal_project(principal.name))

    def _path(self, principal: Principal, path: str, *, directory: bool = False) -> str:
        path = path.strip("/") if directory else path
        check_key(path + ("/" if directory and path else ""), allow_empty=directory, what="path")
        top = path.split("/", 1)[0]
        if path and not may_use_space(principal, top, self._personal_project(principal.name)):
            raise Forbidden(
                f"secret path {path!r} is not yours: paths start with "
                f"{' or '.join(self.tops(principal))}"
            )
        if not directory and "/" not in path:
            raise InvalidInput(f"name a secret inside {top!r}, e.g. '{top}/database'")
        if not directory and path.endswith("/"):
            raise InvalidInput(
                f"{path!r} names a directory (it ends with '/'): name a secret, e.g. "
                f"'{path}database'"
            )
        return path

    async def _request(self, principal: Principal, method: str, api_path: str, **kw: Any) -> Any:
        client = self.service.user_client()
        try:
            return await client.request(method, api_path, token=await self._token(principal), **kw)
        except VaultDenied:
            # a cached token revoked or lost (e.g. the store was rebuilt): one retry with a new
            # one; a real policy refusal is refused again
            self._tokens.pop(self._cache_key(principal), None)
            return await client.request(method, api_path, token=await self._token(principal), **kw)

    async def list(self, principal: Principal, path: str = "") -> SecretDirectory:
        directory = self._path(principal, path, directory=True)
        if not directory:
            return SecretDirectory(path="", entries=[f"{top}/" for top in self.tops(principal)])
        try:
            answer = await self._request(
                principal, "LIST", f"{self.service.mount}/metadata/{directory}"
            )
        except NotFound:
            return SecretDirectory(path=directory, entries=[])
        return SecretDirectory(path=directory, entries=sorted(answer["data"]["keys"]))

    async def read(self, principal: Principal, path: str) -> Secret:
        path = self._path(principal, path)
        try:
            answer = await self._request(principal, "GET", f"{self.service.mount}/data/{path}")
        except NotFound:
            raise NotFound(f"no secret {path!r}") from None
        data = answer["data"]
        if data.get("data") is None:  # deleted version
            raise NotFound(f"no secret {path!r}")
        return Secret(
            path=path,
            data=data["data"],
            version=data["metadata"]["version"],
            updated_at=data["metadata"]["created_time"],
        )

    async def write(self, principal: Principal, path: str, data: dict[str, Any]) -> SecretWritten:
        path = self._path(principal, path)
        answer = await self._request(
            principal, "POST", f"{self.service.mount}/data/{path}", json={"data": check_data(data)}
        )
        return SecretWritten(path=path, version=answer["data"]["version"], keys=sorted(data))

    async def delete(self, principal: Principal, path: str) -> SecretDeleted:
        """Delete a secret and all its versions."""
        path = self._path(principal, path)
        await self.read(principal, path)  # a clear 404 for a secret that is not there
        await self._request(principal, "DELETE", f"{self.service.mount}/metadata/{path}")
        return SecretDeleted(path=path, deleted=True)

    async def rename(self, principal: Principal, source: str, target: str) -> SecretRenamed:
        source, target = self._path(principal, source), self._path(principal, target)
        current = await self.read(principal, source)
        try:
            await self.read(principal, target)
        except NotFound:
            pass
        else:
            raise Conflict(f"a secret {target!r} already exists; delete it or choose another name")
        await self.write(principal, target, current.data)
        await self._request(principal, "DELETE", f"{self.service.mount}/metadata/{source}")
        return SecretRenamed(path=target, renamed_from=source)
