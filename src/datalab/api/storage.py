"""Object storage for users: S3 credentials for the caller's project, the refresh endpoint
services use to renew theirs (the AWS SDKs' container credentials provider), and the object
browser's operations (list, upload, download, delete, folders, share links, public prefixes,
preview, code snippets). See docs/storage.md."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from datalab.api.responses import WITH_STORES
from datalab.errors import PayloadTooLarge, Unauthenticated
from datalab.http.deps import PlatformDep, PrincipalDep, broker
from datalab.storage.keys import check_key
from datalab.storage.objects import (
    MAX_PREVIEW_ROWS,
    FolderMade,
    ObjectListing,
    ObjectsDeleted,
    ObjectStore,
    Preview,
    PublicPrefix,
    ShareLink,
    Uploaded,
)
from datalab.storage.snippets import snippets

router = APIRouter(prefix="/api/storage", tags=["storage"], responses=WITH_STORES)


class S3Access(BaseModel):
    endpoint_url: str = Field(description="The S3 endpoint.")
    region: str
    bucket: str = Field(description="The project's bucket.")
    prefix: str = Field(description="Its keys' prefix: empty unless storage.bucket_mode is prefix.")
    credential_process: dict[str, Any] = Field(
        description="An AWS credential_process answer: Version, AccessKeyId, SecretAccessKey, "
        "and SessionToken and Expiration for temporary credentials."
    )


class ContainerCredentials(BaseModel):
    """The AWS container credentials provider's format."""

    AccessKeyId: str
    SecretAccessKey: str
    Token: str = Field(description="The session token (empty for static credentials).")
    Expiration: str = Field(description="ISO 8601 (empty for static credentials).")


class Buckets(BaseModel):
    buckets: list[str] = Field(description="The caller's personal project's and the project's.")
    project: str = Field(description="The caller's current project.")


class PublicPrefixes(BaseModel):
    bucket: str
    public_prefixes: list[str]


class Snippets(BaseModel):
    bucket: str
    key: str
    expiration: str | None = Field(description="When the credentials in them expire (ISO 8601).")
    snippets: dict[str, str] = Field(description="Code, by tool.")


@router.get("/credentials", summary="S3 session credentials for the caller in their project")
async def credentials(caller: PrincipalDep, platform: PlatformDep) -> S3Access:
    issued = await broker(platform).s3_credentials(caller.name, caller.project_id)
    assert platform.storage is not None
    bucket, prefix = platform.storage.locate(caller.project_id)
    return S3Access(
        endpoint_url=platform.storage.endpoint_url,
        region=platform.storage.region,
        bucket=bucket,
        prefix=prefix,  # "" unless storage.bucket_mode is prefix
        # the shape of an AWS credential_process answer: `datalab s3 credentials --process`
        credential_process=issued.to_json(),
    )


@router.get(
    "/credentials/refresh",
    summary="Fresh S3 credentials for a service (AWS container credentials provider)",
)
async def refresh(
    platform: PlatformDep,
    authorization: Annotated[str | None, Header(description="Bearer <refresh token>")] = None,
) -> ContainerCredentials:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("send the service's refresh token as 'Authorization: Bearer ...'")
    issued = await broker(platform).refresh(token.strip())
    body = issued.to_json()
    return ContainerCredentials(
        AccessKeyId=body["AccessKeyId"],
        SecretAccessKey=body["SecretAccessKey"],
        Token=body.get("SessionToken", ""),
        Expiration=body.get("Expiration", ""),
    )


def objects(platform: PlatformDep) -> ObjectStore:
    return broker(platform).objects


ObjectsDep = Annotated[ObjectStore, Depends(objects)]


@router.get("/buckets", summary="The buckets the caller can use: theirs and the project's")
def buckets(caller: PrincipalDep, store: ObjectsDep) -> Buckets:
    return Buckets(buckets=store.buckets(caller), project=caller.project_id)


@router.get("/buckets/{bucket}/objects", summary="List objects and folders under a prefix")
async def list_objects(
    caller: PrincipalDep,
    store: ObjectsDep,
    bucket: str,
    prefix: str = "",
    delimiter: str = "/",
    max_keys: Annotated[int, Query(ge=1, le=1000)] = 1000,
    token: Annotated[str | None, Query(description="next_token of the previous page")] = None,
) -> ObjectListing:
    return await store.list(caller, bucket, prefix, delimiter, max_keys, token)


@router.put("/buckets/{bucket}/objects/{key:path}", summary="Upload (streamed; multipart)")
async def upload(
    caller: PrincipalDep,
    store: ObjectsDep,
    platform: PlatformDep,
    bucket: str,
    key: str,
    request: Request,
) -> Uploaded | FolderMade:
    if key.endswith("/"):
        return await store.make_folder(caller, bucket, key)
    limit = platform.settings.storage.max_upload_bytes
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(
            f"{bucket}/{key} is larger than the {limit} bytes this platform accepts "
            "(storage.max_upload_bytes)"
        )
    return await store.upload(
        caller,
        bucket,
        key,
        request.stream(),
        content_type=request.headers.get("content-type"),
        max_bytes=limit,
    )


@router.get("/buckets/{bucket}/objects/{key:path}", summary="Download (streamed)")
async def download(
    caller: PrincipalDep, store: ObjectsDep, bucket: str, key: str
) -> StreamingResponse:
    meta, chunks = await store.open(caller, bucket, key)
    headers = {"ETag": f'"{meta.etag}"'}
    if meta.size is not None:
        headers["Content-Length"] = str(meta.size)
    filename = key.rsplit("/", 1)[-1]
    headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{quote(filename)}"
    return StreamingResponse(chunks, media_type=meta.content_type, headers=headers)


@router.delete(
    "/buckets/{bucket}/objects/{key:path}",
    summary="Delete an object, or a folder and everything in it with recursive=true",
)
async def delete(
    caller: PrincipalDep, store: ObjectsDep, bucket: str, key: str, recursive: bool = False
) -> ObjectsDeleted:
    return await store.delete(caller, bucket, key, recursive=recursive)


class ShareRequest(BaseModel):
    key: str = Field(description="Object to share.")
    expires_s: int = Field(3600, description="Link lifetime in seconds (at most 7 days).")


@router.post("/buckets/{bucket}/share", summary="A presigned download link (s3v4)")
async def share(
    caller: PrincipalDep, store: ObjectsDep, bucket: str, body: ShareRequest
) -> ShareLink:
    return await store.share(caller, bucket, body.key, body.expires_s)


class PublicRequest(BaseModel):
    prefix: str = Field("", description="Prefix ('' for the whole bucket).")
    public: bool = Field(description="Anyone may read objects under the prefix (True) or not.")


@router.get("/buckets/{bucket}/public", summary="Prefixes readable by anyone")
async def public_prefixes(caller: PrincipalDep, store: ObjectsDep, bucket: str) -> PublicPrefixes:
    found = await store.public_prefixes(caller, bucket)
    return PublicPrefixes(bucket=bucket, public_prefixes=found)


@router.put("/buckets/{bucket}/public", summary="Make a prefix public or private (bucket policy)")
async def set_public(
    caller: PrincipalDep, store: ObjectsDep, bucket: str, body: PublicRequest
) -> PublicPrefix:
    return await store.set_public(caller, bucket, body.prefix, body.public)


@router.get(
    "/buckets/{bucket}/preview/{key:path}",
    summary="Schema and first rows of a Parquet, CSV or JSON object",
    response_model_exclude_unset=True,
)
async def preview(
    caller: PrincipalDep,
    store: ObjectsDep,
    bucket: str,
    key: str,
    rows: Annotated[int, Query(ge=1, le=MAX_PREVIEW_ROWS)] = 20,
    format: Annotated[str | None, Query(description="parquet, csv or json")] = None,
) -> Preview:
    return await store.preview(caller, bucket, key, rows, format)


@router.get("/snippets", summary="Code reaching a bucket or object with the caller's credentials")
async def code_snippets(
    caller: PrincipalDep, store: ObjectsDep, bucket: str, key: str = ""
) -> Snippets:
    store.check(caller, bucket)
    check_key(key, allow_empty=True)
    await store.client(caller)
    credentials = store.session_credentials(caller)
    storage = store.storage
    return Snippets(
        bucket=bucket,
        key=key,
        expiration=credentials.expiration.isoformat() if credentials.expiration else None,
        snippets=snippets(
            storage.endpoint_url, storage.region, credentials, *storage.locate(bucket, key)
        ),
    )
