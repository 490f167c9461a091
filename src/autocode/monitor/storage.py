"""Where the prediction log and its Parquet live: a local folder or an ``s3://bucket/prefix``.

One small interface (`Store`: list, read, write, delete objects under a root) with two
implementations, so that the ETL and its tests run the same code on a folder and on S3. S3 is
reached with boto3 and the standard variables (``AWS_*``; the endpoint from
``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL`` or ``MLFLOW_S3_ENDPOINT_URL``), so the platform's
renewable credentials (``AWS_CONTAINER_CREDENTIALS_FULL_URI``) work as they do in notebooks.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autocode.data import s3_client as data_s3_client
from autocode.errors import UserError


class StoreError(UserError):
    """A location that cannot be used (bad URI, missing bucket, access refused)."""


@dataclass(frozen=True)
class Entry:
    """An object under a store's root: its key relative to the root, size and version tag."""

    key: str
    size: int
    modified: float  # seconds since the epoch


class Store:
    """Objects under a root (keys are relative, with ``/`` separators)."""

    uri: str

    def list(self, prefix: str = "") -> Iterator[Entry]:
        raise NotImplementedError

    def read(self, key: str) -> bytes:
        raise NotImplementedError

    def write(self, key: str, data: bytes) -> None:
        """Replace ``key`` atomically: readers see the old or the new object, never a part."""
        raise NotImplementedError

    def delete(self, key: str) -> None:
        raise NotImplementedError

    def download(self, key: str, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".part")
        tmp.write_bytes(self.read(key))
        os.replace(tmp, target)

    def join(self, key: str) -> str:
        return f"{self.uri.rstrip('/')}/{key}"


class LocalStore(Store):
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise StoreError(f"key {key!r} leaves {self.root}")
        return path

    def list(self, prefix: str = "") -> Iterator[Entry]:
        if not self.root.is_dir():
            return
        base = self._path(prefix) if prefix else self.root
        start = base if base.is_dir() else base.parent
        for path in sorted(start.rglob("*")):
            if not path.is_file() or path.name.endswith(".part"):
                continue
            key = path.relative_to(self.root).as_posix()
            if key.startswith(prefix):
                stat = path.stat()
                yield Entry(key, stat.st_size, stat.st_mtime)

    def read(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def write(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


def s3_client() -> Any:
    """:func:`autocode.data.s3_client` with the compaction's timeouts and retries."""
    return data_s3_client(connect_timeout=5, read_timeout=60, max_attempts=4)


class S3Store(Store):
    def __init__(self, uri: str, client: Any = None):
        if not uri.startswith("s3://"):
            raise StoreError(f"{uri!r} is not an s3:// URI")
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        if not bucket:
            raise StoreError(f"{uri!r} has no bucket")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = s3_client()
        return self._client

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def list(self, prefix: str = "") -> Iterator[Entry]:
        from botocore.exceptions import BotoCoreError, ClientError

        strip = len(self.prefix) + 1 if self.prefix else 0
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
                for item in page.get("Contents", []):
                    key = item["Key"][strip:]
                    if key and not key.endswith("/"):
                        yield Entry(key, int(item["Size"]), item["LastModified"].timestamp())
        except ClientError as exc:
            raise StoreError(f"cannot list {self.join(prefix)}: {_reason(exc)}") from None
        except BotoCoreError as exc:
            raise StoreError(f"cannot list {self.join(prefix)}: {exc}") from None

    def read(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise FileNotFoundError(self.join(key)) from None
            raise StoreError(f"cannot read {self.join(key)}: {_reason(exc)}") from None

    def write(self, key: str, data: bytes) -> None:
        import base64
        import hashlib

        from botocore.exceptions import ClientError

        digest = base64.b64encode(hashlib.md5(data).digest()).decode()  # noqa: S324 (integrity)
        try:
            self.client.put_object(
                Bucket=self.bucket, Key=self._key(key), Body=data, ContentMD5=digest
            )
        except ClientError as exc:
            raise StoreError(f"cannot write {self.join(key)}: {_reason(exc)}") from None

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))


def _reason(exc: Any) -> str:
    error = exc.response.get("Error", {})
    return f"{error.get('Code', '?')}: {error.get('Message', exc)}"


def open_store(location: str | Path) -> Store:
    """``s3://bucket/prefix`` or a local folder."""
    text = str(location)
    if text.startswith("s3://"):
        return S3Store(text)
    if "://" in text:
        raise StoreError(f"{text!r}: give an s3:// URI or a local folder")
    return LocalStore(text)
