"""Secrets for users: a KV tree per user and per project (Vault KV v2, read and written with
the caller's own Vault token). See docs/secrets.md. Values are never logged nor echoed in
errors."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field

from datalab.api.responses import WITH_STORES, content
from datalab.http.deps import PrincipalDep, store
from datalab.secrets.store import (
    Secret,
    SecretDeleted,
    SecretDirectory,
    SecretRenamed,
    SecretStore,
    SecretWritten,
    export_lines,
)

router = APIRouter(prefix="/api/secrets", tags=["secrets"], responses=WITH_STORES)


StoreDep = Annotated[SecretStore, Depends(store)]


class SecretData(BaseModel):
    data: dict[str, Any] = Field(description="KEY: value pairs (keys are env variable names).")


class Rename(BaseModel):
    source: str = Field(description="Current path, e.g. user-alice/db.")
    target: str = Field(description="New path.")


class VaultToken(BaseModel):
    address: str = Field(description="Vault's address (VAULT_ADDR).")
    token: str
    ttl_s: int = Field(description="Lifetime in seconds (renewable up to the role's maximum).")
    mount: str = Field(description="The KV v2 mount of the secrets.")
    top_dir: str = Field(description="The caller's current project's directory.")
    exports: str = Field(description="export lines for a shell.")


@router.get("/tree", summary="My top directories: my personal project's and the project's")
async def tops(caller: PrincipalDep, secrets: StoreDep) -> SecretDirectory:
    return await secrets.list(caller, "")


@router.get("/tree/{path:path}", summary="Secrets and directories under a path")
async def tree(caller: PrincipalDep, secrets: StoreDep, path: str) -> SecretDirectory:
    return await secrets.list(caller, path)


@router.get("/values/{path:path}", summary="Read a secret (its KEY: value pairs)")
async def read(caller: PrincipalDep, secrets: StoreDep, path: str) -> Secret:
    return await secrets.read(caller, path)


@router.put("/values/{path:path}", summary="Create or replace a secret (a new version)")
async def write(
    caller: PrincipalDep, secrets: StoreDep, path: str, body: SecretData
) -> SecretWritten:
    return await secrets.write(caller, path, body.data)


@router.delete("/values/{path:path}", summary="Delete a secret and all its versions")
async def delete(caller: PrincipalDep, secrets: StoreDep, path: str) -> SecretDeleted:
    return await secrets.delete(caller, path)


@router.post("/rename", summary="Rename (move) a secret")
async def rename(caller: PrincipalDep, secrets: StoreDep, body: Rename) -> SecretRenamed:
    return await secrets.rename(caller, body.source, body.target)


@router.post(
    "/token",
    summary="A Vault token for my secrets (my and my projects' directories), for tools",
)
async def vault_token(caller: PrincipalDep, secrets: StoreDep, response: Response) -> VaultToken:
    """The same token a launch injects: Vault enforces the same policies. Renewable by its
    holder (``bao token renew``) up to the role's maximum TTL."""
    service = secrets.service
    token = await service.user_token(caller.name, secrets.shared_projects(caller.name))
    variables = {
        "VAULT_ADDR": service.address,
        "VAULT_TOKEN": token.token,
        "VAULT_MOUNT": service.mount,
        "VAULT_TOP_DIR": caller.project_id,
    }
    response.headers["Cache-Control"] = "no-store"
    return VaultToken(
        address=service.address,
        token=token.token,
        ttl_s=token.ttl_s,
        mount=service.mount,
        top_dir=caller.project_id,
        exports=export_lines(variables),
    )


@router.get(
    "/export/{path:path}",
    summary="A secret as `export KEY=value` lines for a shell",
    responses=content("text/plain", "`export KEY=value` lines"),
)
async def export(caller: PrincipalDep, secrets: StoreDep, path: str) -> PlainTextResponse:
    secret = await secrets.read(caller, path)
    return PlainTextResponse(export_lines(secret.data), headers={"Cache-Control": "no-store"})
