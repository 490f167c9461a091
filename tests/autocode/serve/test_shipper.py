"""Shipping the prediction log to a real S3 (SeaweedFS): date-partitioned keys, retries while S3
is down, no duplicate after an ambiguous failure."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from autocode.serve import shipper as shipmod
from autocode.serve import spool
from autocode.serve.spool import SpoolWriter

from .conftest import free_port, s3_records

pytestmark = pytest.mark.slow


@pytest.fixture
def s3_env(monkeypatch, seaweedfs) -> dict[str, str]:
    env = {k: v for k, v in seaweedfs.items() if k != "bucket"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def write_segments(directory, dates: list[str], per_segment: int = 3) -> list[str]:
    writer = SpoolWriter(directory, instance="shipper-test", fsync=False)
    writer.open()
    ids = []
    try:
        for date in dates:
            lines = []
            for _ in range(per_segment):
                record_id = uuid.uuid4().hex
                ids.append(record_id)
                lines.append((date, (json.dumps({"id": record_id}) + "\n").encode()))
            writer.append_blocking(lines, timeout=10)
            writer.request_seal()
    finally:
        writer.close()
    return ids


def test_segments_go_to_date_partitioned_keys(tmp_path, s3_env, seaweedfs) -> None:
    prefix = f"predictions-{uuid.uuid4().hex[:8]}"
    ids = write_segments(tmp_path, ["2026-11-23", "2026-11-24"])
    shipper = shipmod.Shipper(tmp_path, f"s3://{seaweedfs['bucket']}/{prefix}/")
    assert shipper.pending()[0] == 2
    assert shipper.ship_pending() == 2
    keys, records = s3_records(s3_env, seaweedfs["bucket"], prefix)
    assert [k.split("/")[1] for k in keys] == ["date=2026-11-23", "date=2026-11-24"]
    segments = sorted(p.name for p in (tmp_path / spool.SHIPPED).glob("*.jsonl"))
    assert [k.rsplit("/", 1)[1] for k in keys] == [s.split("_", 1)[1] for s in segments]
    assert sorted(r["id"] for r in records) == sorted(ids)
    assert shipper.pending() == (0, 0) and shipper.ship_pending() == 0


def test_retried_while_s3_is_down_then_shipped_once(tmp_path, s3_env, seaweedfs) -> None:
    prefix = f"down-{uuid.uuid4().hex[:8]}"
    ids = write_segments(tmp_path, ["2026-11-23"] * 3)
    endpoint = {"url": f"http://127.0.0.1:{free_port()}"}  # nothing listens there: S3 is down

    def client():
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=endpoint["url"],
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                connect_timeout=1,
                retries={"max_attempts": 1},
            ),
        )

    class Observer:
        def __init__(self) -> None:
            self.failures, self.segments, self.pending = 0, 0, (0, 0)

        def shipped(self, segments: int, records: int, size: int) -> None:
            self.segments += segments

        def ship_failed(self) -> None:
            self.failures += 1

        def spool_pending(self, segments: int, size: int) -> None:
            self.pending = (segments, size)

    observer = Observer()
    shipper = shipmod.Shipper(
        tmp_path,
        f"s3://{seaweedfs['bucket']}/{prefix}",
        client_factory=client,
        interval_s=0.05,
        retry_max_s=0.2,
        observer=observer,
    )

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(shipper.run(stop))
        await asyncio.sleep(1.0)
        assert observer.failures >= 2 and shipper.last_error  # retried, with backoff
        assert observer.pending[0] == 3  # nothing lost, nothing marked
        endpoint["url"] = s3_env["AWS_ENDPOINT_URL"]  # S3 is back
        for _ in range(100):
            if shipper.pending()[0] == 0:
                break
            await asyncio.sleep(0.05)
        stop.set()
        await task

    asyncio.run(scenario())
    assert shipper.failures == 0 and observer.pending == (0, 0) and observer.segments == 3
    keys, records = s3_records(s3_env, seaweedfs["bucket"], prefix)
    assert len(keys) == 3 and sorted(r["id"] for r in records) == sorted(ids)


def test_an_ambiguous_failure_does_not_duplicate(tmp_path, s3_env, seaweedfs) -> None:
    """S3 stores the object but the client sees an error (timeout after the write): the retry
    writes the same key again, so S3 still holds each record once."""
    prefix = f"ambiguous-{uuid.uuid4().hex[:8]}"
    ids = write_segments(tmp_path, ["2026-11-23", "2026-11-23"])
    calls = {"n": 0}

    class LosesTheAnswer:
        def __init__(self) -> None:
            self.real = shipmod.s3_client()

        def put_object(self, **kwargs):
            calls["n"] += 1
            self.real.put_object(**kwargs)
            if calls["n"] == 1:
                raise TimeoutError("read timeout (the object was stored)")

    shipper = shipmod.Shipper(
        tmp_path, f"s3://{seaweedfs['bucket']}/{prefix}", client_factory=LosesTheAnswer
    )
    with pytest.raises(TimeoutError):
        shipper.ship_pending()
    assert shipper.pending()[0] == 2  # not marked: it will be sent again
    assert shipper.ship_pending() == 2
    keys, records = s3_records(s3_env, seaweedfs["bucket"], prefix)
    assert len(keys) == 2 and calls["n"] == 3
    assert sorted(r["id"] for r in records) == sorted(ids)  # each exactly once


def test_key_layout_and_uri_parsing() -> None:
    assert shipmod.split_s3_uri("s3://bucket") == ("bucket", "")
    assert shipmod.split_s3_uri("s3://bucket/a/b/") == ("bucket", "a/b")
    with pytest.raises(ValueError):
        shipmod.split_s3_uri("https://bucket/a")
    segment = spool.Segment.parse(
        __import__("pathlib").Path("2026-11-23_20261123T101010000000Z-pod-1-abc123-000007.jsonl")
    )
    assert segment is not None
    no_prefix = shipmod.Shipper("/nonexistent", "s3://logs")
    assert (
        no_prefix.key_for(segment)
        == "date=2026-11-23/20261123T101010000000Z-pod-1-abc123-000007.jsonl"
    )
    assert (
        shipmod.Shipper("/x", "s3://logs/p/q")
        .uri_for(segment)
        .startswith("s3://logs/p/q/date=2026-11-23/")
    )
