"""Ships sealed spool segments to S3, in the background, retrying while S3 is down.

Each segment goes to one deterministic key, ``<prefix>/date=YYYY-MM-DD/<segment>.jsonl``, with a
``Content-MD5`` so that S3 refuses a corrupted body. A segment is marked shipped (moved to
``shipped/``) only after S3 acknowledged the upload. When an attempt fails in a way that leaves
its outcome unknown (timeout after S3 stored the object, crash before the mark), the next
attempt writes the same bytes to the same key: S3 holds each segment exactly once, so no record
is ever duplicated by a retry.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import os
import random
import time
from collections.abc import Callable
from typing import Any, Protocol

from autocode.data import s3_client as data_s3_client
from autocode.serve import spool

log = logging.getLogger(__name__)


class ShipObserver(Protocol):
    def shipped(self, segments: int, records: int, size: int) -> None: ...

    def ship_failed(self) -> None: ...

    def spool_pending(self, segments: int, size: int) -> None: ...


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` → (``bucket``, ``some/prefix``)."""
    if not uri.startswith("s3://"):
        raise ValueError(f"{uri!r} is not an s3:// URI")
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    if not bucket:
        raise ValueError(f"{uri!r} has no bucket")
    return bucket, prefix.strip("/")


def s3_client() -> Any:
    """:func:`autocode.data.s3_client` with short timeouts: a dead endpoint must fail an attempt
    quickly, the shipper retries it."""
    return data_s3_client(connect_timeout=3, read_timeout=30, max_attempts=2)


class Shipper:
    def __init__(
        self,
        directory: os.PathLike[str] | str,
        s3_uri: str,
        *,
        client_factory: Callable[[], Any] = s3_client,
        interval_s: float = 5.0,
        retry_max_s: float = 60.0,
        keep_shipped_s: float = 24 * 3600.0,
        observer: ShipObserver | None = None,
    ):
        from pathlib import Path

        self.directory = Path(directory)
        self.bucket, self.prefix = split_s3_uri(s3_uri)
        self.client_factory = client_factory
        self.interval_s = interval_s
        self.retry_max_s = retry_max_s
        self.keep_shipped_s = keep_shipped_s
        self.observer = observer
        self.last_error: str | None = None
        self.failures = 0  # consecutive failed attempts
        self._client: Any = None

    def key_for(self, segment: spool.Segment) -> str:
        name = f"date={segment.date}/{segment.id}{spool.SUFFIX}"
        return f"{self.prefix}/{name}" if self.prefix else name

    def uri_for(self, segment: spool.Segment) -> str:
        return f"s3://{self.bucket}/{self.key_for(segment)}"

    def pending(self) -> tuple[int, int]:
        segments = spool.sealed_segments(self.directory)
        size = 0
        for segment in segments:
            try:
                size += segment.path.stat().st_size
            except FileNotFoundError:
                continue
        return len(segments), size

    def ship_pending(self) -> int:
        """Ship every sealed segment, oldest first; returns how many. Raises on the first
        failure (the segment stays sealed and is tried again next time)."""
        shipped = 0
        try:
            for segment in spool.sealed_segments(self.directory):
                self._put(segment)
                shipped += 1
        finally:
            if self.observer is not None:
                self.observer.spool_pending(*self.pending())
        if self.keep_shipped_s >= 0:
            spool.prune_shipped(self.directory, self.keep_shipped_s)
        return shipped

    def _put(self, segment: spool.Segment) -> None:
        body = segment.path.read_bytes()
        if self._client is None:
            self._client = self.client_factory()
        digest = base64.b64encode(hashlib.md5(body).digest()).decode()  # noqa: S324 (integrity)
        records = body.count(b"\n")
        self._client.put_object(
            Bucket=self.bucket,
            Key=self.key_for(segment),
            Body=body,
            ContentMD5=digest,
            ContentType="application/x-ndjson",
            Metadata={"records": str(records), "segment": segment.id},
        )
        spool.mark_shipped(self.directory, segment)
        if self.observer is not None:
            self.observer.shipped(1, records, len(body))

    async def run(self, stop: asyncio.Event) -> None:
        """Ship every ``interval_s`` until ``stop`` is set; back off (doubling, with jitter, up
        to ``retry_max_s``) while attempts fail."""
        delay = self.interval_s
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.ship_pending)
            except Exception as exc:
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                if self.failures == 1 or self.failures % 10 == 0:
                    log.warning(
                        "shipping the prediction log to s3://%s failed (attempt %d): %s",
                        self.bucket,
                        self.failures,
                        exc,
                    )
                if self.observer is not None:
                    self.observer.ship_failed()
                self._client = None  # a fresh client at the next attempt (endpoint may move)
                delay = min(self.retry_max_s, max(self.interval_s, delay * 2))
                wait = delay * random.uniform(0.8, 1.2)  # jitter
            else:
                if self.failures:
                    log.info("prediction log shipping recovered after %d failures", self.failures)
                self.failures = 0
                self.last_error = None
                delay = wait = self.interval_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait)

    def drain(self, timeout_s: float) -> bool:
        """Ship what is sealed, retrying until ``timeout_s`` (shutdown); True if all shipped."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.ship_pending()
                return True
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._client = None
                if time.monotonic() + 1.0 > deadline:
                    log.warning(
                        "prediction log segments left unshipped at shutdown: %s "
                        "(shipped at the next start)",
                        exc,
                    )
                    return False
                time.sleep(1.0)
