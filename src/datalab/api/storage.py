"""Object storage for users: S3 credentials for the caller's project, and the refresh endpoint
services use to renew theirs (the AWS SDKs' container credentials provider)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header

from datalab.api.deps import PlatformDep, PrincipalDep
from datalab.errors import DatalabError, Unauthenticated
from datalab.storage.injection import CredentialBroker

router = APIRouter(prefix="/api/storage", tags=["storage"])


class StorageDisabled(DatalabError):
    status = 503
    code = "storage_disabled"


def broker(platform: PlatformDep) -> CredentialBroker:
    credentials = platform.services.credentials
    if platform.storage is None or credentials is None:
        raise StorageDisabled("object storage is not enabled on this platform (storage.mode)")
    return credentials


@router.get("/credentials", summary="S3 session credentials for the caller in their project")
async def credentials(caller: PrincipalDep, platform: PlatformDep) -> dict[str, Any]:
    issued = await broker(platform).s3_credentials(caller.name, caller.project_id)
    assert platform.storage is not None
    return {
        "endpoint_url": platform.storage.endpoint_url,
        "region": platform.storage.region,
        "bucket": caller.project_id,
        # the shape of an AWS credential_process answer: `datalab s3 credentials --process`
        "credential_process": issued.to_json(),
    }


@router.get(
    "/credentials/refresh",
    summary="Fresh S3 credentials for a service (AWS container credentials provider)",
)
async def refresh(
    platform: PlatformDep,
    authorization: Annotated[str | None, Header(description="Bearer <refresh token>")] = None,
) -> dict[str, Any]:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("send the service's refresh token as 'Authorization: Bearer ...'")
    issued = await broker(platform).refresh(token.strip())
    body = issued.to_json()
    return {
        "AccessKeyId": body["AccessKeyId"],
        "SecretAccessKey": body["SecretAccessKey"],
        "Token": body.get("SessionToken", ""),
        "Expiration": body.get("Expiration", ""),
    }
