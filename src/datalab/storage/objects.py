"""The storage API's operations: list, upload, download, delete, folders, share links, public
prefixes. Object operations run with the *caller's own* STS session credentials, so S3 itself
enforces the tenancy (the platform checks bucket and key first, to give clear errors).

Uploads stream: bodies up to one part are a single PUT; larger ones become a multipart upload
of ``PART_BYTES`` parts sent concurrently, so the platform holds at most ``PARTS_IN_FLIGHT``
parts in memory, the one being received included. Downloads stream the object in chunks.
"""

from __future__ import annotations

import asyncio
import builtins  # the classes below have a method named list
import json
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import botocore.exceptions
from botocore.client import BaseClient
from pydantic import BaseModel, ConfigDict, Field

from datalab.errors import (
    Conflict,
    DatalabError,
    Forbidden,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    StorageUnavailable,
)
from datalab.identity.access import Principal
from datalab.storage.keys import check_bucket, check_key
from datalab.storage.service import S3Credentials, StorageService, s3_client

PART_BYTES = 5 * 1024 * 1024
PARTS_IN_FLIGHT = 3
CHUNK_BYTES = 1024 * 1024
MAX_SHARE_S = 7 * 24 * 3600  # S3 signature v4 limit
REFRESH_MARGIN_S = 300
MAX_PREVIEW_ROWS = 100  # rows a preview returns at most (preview.py loads pyarrow lazily)


def _s3_error(exc: botocore.exceptions.ClientError, bucket: str, key: str = "") -> DatalabError:
    """A clear platform error for an S3 refusal (never echoes credentials)."""
    code = exc.response.get("Error", {}).get("Code", "")
    where = f"{bucket}/{key}" if key else bucket
    if code in ("NoSuchKey", "404", "NotFound"):
        return NotFound(f"no object {where!r}")
    if code == "NoSuchBucket":
        return NotFound(f"no bucket {bucket!r}")
    if code in ("AccessDenied", "403", "Forbidden"):
        return Forbidden(f"access to {where!r} is denied")
    if code == "BucketNotEmpty":
        return Conflict(f"bucket {bucket!r} is not empty")
    message = exc.response.get("Error", {}).get("Message", "")
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 500)
    if 400 <= status < 500:  # the request was wrong, not the store: the caller can fix it
        return InvalidInput(f"object storage refused {where!r}: {code} {message}".strip())
    return StorageUnavailable(f"object storage error on {where!r}: {code} {message}".strip())


# -- what the store answers (the API's response models) --------------------------------------


class PublicPrefix(BaseModel):
    bucket: str
    prefix: str
    public: bool


class ObjectListed(BaseModel):
    key: str
    size: int = Field(description="In bytes.")
    last_modified: str = Field(description="ISO 8601.")
    etag: str


class ObjectListing(BaseModel):
    bucket: str
    prefix: str
    folders: list[str] = Field(description="Folders under the prefix (with the delimiter).")
    objects: list[ObjectListed]
    next_token: str | None = Field(description="token for the next page; None on the last.")
    truncated: bool = Field(description="More objects follow (next_token).")


class Uploaded(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bucket: str
    key: str
    size: int = Field(description="Bytes written.")
    parts: int = Field(description="Multipart upload parts (1 for a small object).")


class FolderMade(BaseModel):
    """An upload to a key ending with /: an empty folder."""

    model_config = ConfigDict(extra="forbid")

    bucket: str
    key: str = Field(description="The folder (ending with /).")


class ObjectsDeleted(BaseModel):
    bucket: str
    deleted: list[str] = Field(description="The keys deleted.")


class ShareLink(BaseModel):
    bucket: str
    key: str
    url: str = Field(description="A presigned download link (s3v4).")
    expires_s: int = Field(description="Its lifetime in seconds.")


class PreviewColumn(BaseModel):
    name: str
    type: str = Field(description="Its Arrow type.")


class Preview(BaseModel):
    """An object's first rows. Fields that do not apply to its format are absent."""

    bucket: str
    key: str
    format: str = Field(description="parquet, csv or json.")
    columns: list[PreviewColumn] = Field(
        alias="schema", description="Its columns (empty for JSON records of different shapes)."
    )
    rows: list[Any] = Field(description="The first rows, as JSON.")
    total_rows: int | None = Field(None, description="Parquet: rows in the file.")
    delimiter: str | None = Field(None, description="CSV: the delimiter found.")
    truncated: bool | None = Field(
        None, description="CSV and JSON: only the object's beginning was read."
    )


@dataclass(frozen=True)
class ObjectMeta:
    """What a download needs to know of an object besides its bytes."""

    size: int | None  # bytes, when the store says
    content_type: str
    etag: str


@dataclass
class _Session:
    credentials: S3Credentials
    client: BaseClient


class ObjectStore:
    def __init__(self, storage: StorageService, credentials_for: Any, personal_project: Any):
        self.storage = storage
        self._credentials_for = credentials_for  # async (user, project) -> S3Credentials
        self._personal_project = personal_project  # (user name) -> project id
        self._sessions: dict[tuple[str, str], _Session] = {}

    # -- sessions ---------------------------------------------------------------------------

    async def client(self, principal: Principal) -> BaseClient:
        """A boto3 client with the caller's session credentials, reused until near expiry."""
        cache_key = (principal.name, principal.project_id)
        session = self._sessions.get(cache_key)
        expiration = session.credentials.expiration if session else None
        if session is None or (
            expiration is not None and expiration.timestamp() - time.time() < REFRESH_MARGIN_S
        ):
            credentials = await self._credentials_for(principal.name, principal.project_id)
            client = s3_client(
                self.storage.endpoint_url,
                self.storage.region,
                credentials.access_key_id,
                credentials.secret_access_key,
                credentials.session_token,
            )
            session = _Session(credentials, client)
            self._sessions[cache_key] = session
        return session.client

    def session_credentials(self, principal: Principal) -> S3Credentials:
        """The credentials behind :meth:`client` (call it first)."""
        return self._sessions[(principal.name, principal.project_id)].credentials

    def buckets(self, principal: Principal) -> list[str]:
        personal = self._personal_project(principal.name)
        return sorted({personal, principal.project_id})

    def check(self, principal: Principal, bucket: str) -> str:
        return check_bucket(principal, bucket, self._personal_project(principal.name))

    async def _call(self, bucket: str, key: str, function: Any, **kwargs: Any) -> Any:
        try:
            return await self.storage.run("request", function, **kwargs)
        except botocore.exceptions.ClientError as exc:
            raise _s3_error(exc, bucket, key) from None

    # -- listing ------------------------------------------------------------------------------

    async def list(
        self,
        principal: Principal,
        bucket: str,
        prefix: str = "",
        delimiter: str = "/",
        max_keys: int = 1000,
        token: str | None = None,
    ) -> ObjectListing:
        self.check(principal, bucket)
        check_key(prefix, allow_empty=True, what="prefix")
        if not 1 <= max_keys <= 1000:
            raise InvalidInput("max_keys must be between 1 and 1000")
        root, physical_prefix = self.storage.locate(bucket, prefix)
        kwargs: dict[str, Any] = {"Bucket": root, "Prefix": physical_prefix, "MaxKeys": max_keys}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        if token:
            kwargs["ContinuationToken"] = token
        client = await self.client(principal)
        answer = await self._call(bucket, prefix, client.list_objects_v2, **kwargs)
        return ObjectListing(
            bucket=bucket,
            prefix=prefix,
            folders=[
                self.storage.space_key(bucket, p["Prefix"])
                for p in answer.get("CommonPrefixes", [])
            ],
            objects=[
                ObjectListed(
                    key=self.storage.space_key(bucket, o["Key"]),
                    size=o["Size"],
                    last_modified=o["LastModified"].isoformat(),
                    etag=o.get("ETag", "").strip('"'),
                )
                for o in answer.get("Contents", [])
            ],
            next_token=answer.get("NextContinuationToken"),
            truncated=bool(answer.get("IsTruncated")),
        )

    # -- upload -------------------------------------------------------------------------------

    async def upload(
        self,
        principal: Principal,
        bucket: str,
        key: str,
        body: AsyncIterator[bytes],
        *,
        content_type: str | None = None,
        max_bytes: int,
    ) -> Uploaded:
        self.check(principal, bucket)
        check_key(key)
        client = await self.client(principal)
        extra = {"ContentType": content_type} if content_type else {}
        root, path = self.storage.locate(bucket, key)
        writer = _MultipartWriter(self, client, root, path, extra)
        # each part is one buffer the chunks are appended to: one copy of each byte, and no
        # second copy of a whole part (large buffers grow in place, see cli/server.py)
        part = bytearray()
        total = 0
        try:
            async for chunk in body:
                total += len(chunk)
                if total > max_bytes:
                    raise PayloadTooLarge(
                        f"{bucket}/{key} is larger than the {max_bytes} bytes this platform "
                        "accepts (storage.max_upload_bytes)"
                    )
                part += chunk
                if len(part) >= PART_BYTES:
                    await writer.add(part)
                    part = bytearray()
            if writer.parts == 0:
                await self._call(
                    bucket, key, client.put_object, Bucket=root, Key=path, Body=part, **extra
                )
            else:
                if part:
                    await writer.add(part)
                await writer.complete()
        except BaseException:
            await writer.abort()  # leave no orphan parts behind
            raise
        return Uploaded(bucket=bucket, key=key, size=total, parts=max(1, writer.parts))

    async def make_folder(self, principal: Principal, bucket: str, prefix: str) -> FolderMade:
        """S3 has no folders: an empty object whose key ends with '/' shows one."""
        self.check(principal, bucket)
        folder = prefix if prefix.endswith("/") else prefix + "/"
        check_key(folder, what="folder")
        client = await self.client(principal)
        root, path = self.storage.locate(bucket, folder)
        await self._call(bucket, folder, client.put_object, Bucket=root, Key=path, Body=b"")
        return FolderMade(bucket=bucket, key=folder)

    # -- download -----------------------------------------------------------------------------

    async def open(
        self, principal: Principal, bucket: str, key: str
    ) -> tuple[ObjectMeta, AsyncIterator[bytes]]:
        """The object's metadata and an iterator over its bytes."""
        self.check(principal, bucket)
        check_key(key)
        client = await self.client(principal)
        root, path = self.storage.locate(bucket, key)
        answer = await self._call(bucket, key, client.get_object, Bucket=root, Key=path)
        stream = answer["Body"]

        async def chunks() -> AsyncIterator[bytes]:
            try:
                while True:
                    chunk = await asyncio.to_thread(stream.read, CHUNK_BYTES)
                    if not chunk:
                        return
                    yield chunk
            finally:
                stream.close()

        meta = ObjectMeta(
            size=answer.get("ContentLength"),
            content_type=answer.get("ContentType") or "application/octet-stream",
            etag=answer.get("ETag", "").strip('"'),
        )
        return meta, chunks()

    async def preview(
        self, principal: Principal, bucket: str, key: str, rows: int, format: str | None
    ) -> Preview:
        """Schema and first rows of a Parquet, CSV or JSON object (see preview.py)."""
        from datalab.storage import preview  # pyarrow: loaded when first needed (~60 MB)

        self.check(principal, bucket)
        check_key(key)
        kind = preview.detect_format(key, format)
        client = await self.client(principal)
        credentials = self.session_credentials(principal)
        storage = self.storage
        root, path = storage.locate(bucket, key)
        try:
            if kind == "parquet":
                result = await storage.run(
                    "preview",
                    preview.preview_parquet,
                    storage.endpoint_url,
                    storage.region,
                    credentials,
                    root,
                    path,
                    rows,
                )
            else:
                reader = preview.preview_csv if kind == "csv" else preview.preview_json
                result = await storage.run("preview", reader, client, root, path, rows)
        except botocore.exceptions.ClientError as exc:
            raise _s3_error(exc, bucket, key) from None
        # the fields of the format only: the others stay unset (absent from the API's answer)
        return Preview.model_validate({"bucket": bucket, "key": key, "format": kind, **result})

    # -- delete -------------------------------------------------------------------------------

    async def delete(
        self, principal: Principal, bucket: str, key: str, *, recursive: bool = False
    ) -> ObjectsDeleted:
        self.check(principal, bucket)
        check_key(key)
        client = await self.client(principal)
        root, path = self.storage.locate(bucket, key)
        if not recursive:
            # S3 deletes are silent about missing keys: say what is (not) there instead
            try:
                await self._call(bucket, key, client.head_object, Bucket=root, Key=path)
            except NotFound:
                inside = await self._call(
                    bucket,
                    key,
                    client.list_objects_v2,
                    Bucket=root,
                    Prefix=path.rstrip("/") + "/",
                    MaxKeys=1,
                )
                if inside.get("KeyCount"):
                    raise InvalidInput(
                        f"{key!r} is a folder: delete it and its content with recursive=true"
                    ) from None
                raise
            await self._call(bucket, key, client.delete_object, Bucket=root, Key=path)
            return ObjectsDeleted(bucket=bucket, deleted=[key])
        prefix = path if path.endswith("/") else path + "/"
        deleted: builtins.list[str] = []
        folders = {prefix}
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": root, "Prefix": prefix}
            if token:
                kwargs["ContinuationToken"] = token
            page = await self._call(bucket, prefix, client.list_objects_v2, **kwargs)
            keys = [o["Key"] for o in page.get("Contents", [])]
            folders.update(_folders_between(prefix, keys))
            files = [k for k in keys if not k.endswith("/")]  # a page has 1,000 keys at most
            await self._delete_keys(client, bucket, root, prefix, files)
            deleted += [self.storage.space_key(bucket, k) for k in keys]
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated"):
                break
        # Folders last, deepest first: a folder marker ("new folder") deleted while its folder
        # still held objects, or a directory its objects lived in (SeaweedFS keeps both), would
        # stay listed as an empty folder. Deleting a folder that was never an object is a no-op.
        ordered = sorted(folders, key=lambda f: (-f.count("/"), f))
        for start in range(0, len(ordered), 1000):  # DeleteObjects takes 1,000 keys at most
            await self._delete_keys(client, bucket, root, prefix, ordered[start : start + 1000])
        return ObjectsDeleted(bucket=bucket, deleted=deleted)

    async def _delete_keys(
        self, client: BaseClient, bucket: str, root: str, prefix: str, keys: builtins.list[str]
    ) -> None:
        if keys:
            await self._call(
                bucket,
                prefix,
                client.delete_objects,
                Bucket=root,
                Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True},
            )

    # -- sharing ------------------------------------------------------------------------------

    async def share(self, principal: Principal, bucket: str, key: str, expires_s: int) -> ShareLink:
        """A presigned GET link (signature v4). Signed with the platform's S3 identity once the
        caller's access is checked, so the link may outlive the caller's session."""
        self.check(principal, bucket)
        check_key(key)
        if not 1 <= expires_s <= MAX_SHARE_S:
            raise InvalidInput(f"expires_s must be between 1 and {MAX_SHARE_S} (7 days)")
        client = await self.client(principal)
        root, path = self.storage.locate(bucket, key)
        await self._call(bucket, key, client.head_object, Bucket=root, Key=path)
        url = self.storage.presigned_get(root, path, expires_s)
        return ShareLink(bucket=bucket, key=key, url=url, expires_s=expires_s)

    async def set_public(
        self, principal: Principal, bucket: str, prefix: str, public: bool
    ) -> PublicPrefix:
        """Make a prefix readable by anyone (or private again) with the bucket policy."""
        self.check(principal, bucket)
        check_key(prefix, allow_empty=True, what="prefix")
        client = await self._policy_client(principal)
        root, path = self.storage.locate(bucket, prefix)
        policy = await self._policy(client, root)
        statements = [s for s in policy["Statement"] if s.get("Sid") != _public_sid(path)]
        if public:
            statements.append(
                {
                    "Sid": _public_sid(path),
                    "Effect": "Allow",
                    "Principal": "*",
                    "Action": ["s3:GetObject"],
                    "Resource": [f"arn:aws:s3:::{root}/{path}*"],
                }
            )
        if statements:
            document = json.dumps({"Version": "2012-10-17", "Statement": statements})
            await self._call(bucket, prefix, client.put_bucket_policy, Bucket=root, Policy=document)
        else:
            await self._call(bucket, prefix, client.delete_bucket_policy, Bucket=root)
        return PublicPrefix(bucket=bucket, prefix=prefix, public=public)

    async def public_prefixes(self, principal: Principal, bucket: str) -> builtins.list[str]:
        self.check(principal, bucket)
        client = await self._policy_client(principal)
        root, space = self.storage.locate(bucket)
        policy = await self._policy(client, root)
        physical = [
            bytes.fromhex(s["Sid"].removeprefix(_PUBLIC)).decode()
            for s in policy["Statement"]
            if str(s.get("Sid", "")).startswith(_PUBLIC)
        ]
        return sorted(self.storage.space_key(bucket, p) for p in physical if p.startswith(space))

    async def _policy_client(self, principal: Principal) -> BaseClient:
        """Bucket policies: the caller's own bucket with their credentials; in prefix mode the
        shared bucket's policy, which users may not change, by the platform for them."""
        if self.storage.prefix_mode:
            return self.storage.admin_client()
        return await self.client(principal)

    async def _policy(self, client: BaseClient, bucket: str) -> dict[str, Any]:
        try:
            answer = await self.storage.run("policy", client.get_bucket_policy, Bucket=bucket)
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NoSuchBucketPolicy":
                return {"Version": "2012-10-17", "Statement": []}
            raise _s3_error(exc, bucket) from None
        return dict(json.loads(answer["Policy"]))


class _MultipartWriter:
    """A multipart upload whose parts go up concurrently, so the platform keeps pace with a
    parallel client while holding at most ``PARTS_IN_FLIGHT`` parts: the uploads in flight and
    the part being received (filling one takes milliseconds on a fast client, sending one
    tens of milliseconds, so nearly all the time ``PARTS_IN_FLIGHT`` parts are going up)."""

    def __init__(
        self, store: ObjectStore, client: BaseClient, bucket: str, key: str, extra: dict[str, Any]
    ) -> None:
        self.store, self.client, self.bucket, self.key, self.extra = (
            store,
            client,
            bucket,
            key,
            extra,
        )
        self.upload_id: str | None = None
        self.parts = 0
        self._etags: dict[int, str] = {}
        self._pending: set[asyncio.Task[None]] = set()

    async def add(self, data: bytearray) -> None:
        if self.upload_id is None:
            started = await self.store._call(
                self.bucket,
                self.key,
                self.client.create_multipart_upload,
                Bucket=self.bucket,
                Key=self.key,
                **self.extra,
            )
            self.upload_id = started["UploadId"]
        self.parts += 1
        task = asyncio.create_task(self._upload(self.parts, data))
        self._pending.add(task)
        # room for the next part's buffer before returning: the caller fills it while the
        # others go up, so at most PARTS_IN_FLIGHT buffers exist, the one being filled included
        while len(self._pending) >= PARTS_IN_FLIGHT:
            await self._wait(asyncio.FIRST_COMPLETED)

    async def _upload(self, number: int, data: bytearray) -> None:
        answer = await self.store._call(
            self.bucket,
            self.key,
            self.client.upload_part,
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            PartNumber=number,
            Body=data,
        )
        self._etags[number] = answer["ETag"]

    async def _wait(self, when: str) -> None:
        done, self._pending = await asyncio.wait(self._pending, return_when=when)
        for task in done:
            task.result()  # a failed part fails the upload

    async def complete(self) -> None:
        if self._pending:
            await self._wait(asyncio.ALL_COMPLETED)
        parts = [{"PartNumber": n, "ETag": self._etags[n]} for n in sorted(self._etags)]
        await self.store._call(
            self.bucket,
            self.key,
            self.client.complete_multipart_upload,
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": parts},
        )

    async def abort(self) -> None:
        for task in self._pending:
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)
        if self.upload_id is not None:
            await asyncio.to_thread(
                _ignore_errors,
                self.client.abort_multipart_upload,
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self.upload_id,
            )


_PUBLIC = "DatalabPublic"


def _folders_between(prefix: str, keys: Iterable[str]) -> set[str]:
    """The folders from ``prefix`` (excluded) down to each key's parent, and folder keys."""
    folders: set[str] = set()
    for key in keys:
        parts = key[len(prefix) :].split("/")[:-1]
        folders.update(prefix + "/".join(parts[:depth]) + "/" for depth in range(1, len(parts) + 1))
    return folders


def _public_sid(prefix: str) -> str:
    """Statement ids allow letters and digits only: the prefix is hex-encoded."""
    return _PUBLIC + prefix.encode().hex()


def _ignore_errors(function: Any, **kwargs: Any) -> None:
    try:
        function(**kwargs)
    except Exception:  # cleanup after a failure must not hide the failure itself
        return
