"""The prediction log spool: group commit, durability before acknowledgement, rotation, crash
recovery, exclusivity, write failures."""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from pathlib import Path

import anyio
import pytest

from autocode.serve import spool
from autocode.serve.spool import SpoolError, SpoolWriter

pytestmark = pytest.mark.anyio


def line(record_id: str, date: str = "2026-11-23", size: int = 0) -> tuple[str, bytes]:
    record = {"id": record_id, "pad": "x" * size}
    return date, (json.dumps(record) + "\n").encode()


def all_ids(directory: Path) -> list[str]:
    ids = []
    for sub in (spool.OPEN, spool.SEALED, spool.SHIPPED):
        for path in sorted((directory / sub).glob("*.jsonl")):
            ids += [r["id"] for r in spool.read_records(path)]
    return ids


@pytest.fixture
def writer(tmp_path):
    w = SpoolWriter(tmp_path / "spool", instance="test-host")
    w.open()
    yield w
    w.close()


async def test_records_are_on_disk_when_append_returns(writer) -> None:
    for index in range(5):
        await writer.append([line(f"r{index}")])
        # read the file as another process would: the record is there, complete
        assert all_ids(writer.directory)[-1] == f"r{index}"
    [segment] = list((writer.directory / spool.OPEN).glob("*.jsonl"))
    assert segment.name.startswith("2026-11-23_") and "-test-host-" in segment.name
    assert oct(segment.stat().st_mode & 0o777) == "0o600"


async def test_concurrent_appends_share_fsyncs(writer) -> None:
    async def one(index: int) -> None:
        await writer.append([line(f"c{index}-{i}") for i in range(3)])

    async with anyio.create_task_group() as group:
        for index in range(200):
            group.start_soon(one, index)
    assert writer.state.records == 600
    assert len(set(all_ids(writer.directory))) == 600
    assert writer.state.groups < 200  # group commit: requests waited for shared syncs


async def test_rotation_by_size_age_and_date(tmp_path) -> None:
    w = SpoolWriter(tmp_path / "s", instance="h", max_bytes=2048, max_age_s=0.3)
    w.open()
    try:
        for index in range(10):
            await w.append([line(f"s{index}", size=400)])  # about 420 bytes each
        for _ in range(100):  # sealing follows the acknowledgement, in the writer thread
            sealed = spool.sealed_segments(w.directory)
            if len(sealed) == 2:
                break
            await anyio.sleep(0.01)
        # sealed as soon as they reach the limit: 5 records of ~420 bytes each
        assert len(sealed) == 2 and all(2048 <= s.path.stat().st_size < 2048 + 500 for s in sealed)
        await w.append([line("d1", date="2026-11-24")])
        assert spool.sealed_segments(w.directory)[-1].date == "2026-11-23"
        open_now = list((w.directory / spool.OPEN).glob("*.jsonl"))
        assert [p.name[:10] for p in open_now] == ["2026-11-24"]
        await anyio.sleep(0.6)  # the age limit seals the idle segment
        assert not list((w.directory / spool.OPEN).glob("*.jsonl"))
        assert spool.sealed_segments(w.directory)[-1].date == "2026-11-24"
    finally:
        w.close()
    ids = all_ids(tmp_path / "s")
    assert sorted(ids) == sorted([f"s{i}" for i in range(10)] + ["d1"])
    names = [s.id for s in spool.sealed_segments(tmp_path / "s")]
    assert len(names) == len(set(names))


async def test_close_seals_and_a_second_server_is_refused(tmp_path) -> None:
    w = SpoolWriter(tmp_path / "s")
    w.open()
    with pytest.raises(SpoolError, match="used by another server"):
        SpoolWriter(tmp_path / "s").open()
    await w.append([line("a")])
    w.close()
    assert [s.path.name for s in spool.sealed_segments(tmp_path / "s")]
    with pytest.raises(SpoolError, match="closed"):
        await w.append([line("b")])
    again = SpoolWriter(tmp_path / "s")  # the lock was released
    again.open()
    again.close()


def test_recovery_keeps_complete_lines_only(tmp_path) -> None:
    directory = tmp_path / "s"
    for sub in (spool.OPEN, spool.SEALED, spool.SHIPPED):
        (directory / sub).mkdir(parents=True)
    good = b'{"id": "a"}\n{"id": "b"}\n'
    (
        directory / spool.OPEN / "2026-11-23_20261123T000000000000Z-x-aaaaaa-000001.jsonl"
    ).write_bytes(good + b'{"id": "torn')
    (
        directory / spool.OPEN / "2026-11-23_20261123T000001000000Z-x-aaaaaa-000002.jsonl"
    ).write_bytes(
        good + b"\x00\x00\x00\x00\n" + b'{"id": "after-garbage"}\n'
    )  # blocks a power loss left unwritten: the tail is not trusted
    (
        directory / spool.OPEN / "2026-11-23_20261123T000002000000Z-x-aaaaaa-000003.jsonl"
    ).write_bytes(b"")
    w = SpoolWriter(directory)
    w.open()
    w.close()
    assert len(w.state.recovered) == 2
    sealed = spool.sealed_segments(directory)
    assert [s.path.read_bytes() for s in sealed] == [good, good]
    assert not list((directory / spool.OPEN).iterdir())


async def test_a_failed_write_is_an_error_and_leaves_no_partial_line(writer, monkeypatch) -> None:
    await writer.append([line("before")])
    real_write = os.write
    calls = {"n": 0}

    def flaky_write(fd: int, data) -> int:
        if threading.current_thread().name == "autocode-spool":
            calls["n"] += 1
            if calls["n"] == 1:
                real_write(fd, bytes(data[:7]))  # a partial write, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", flaky_write)
    with pytest.raises(SpoolError, match="No space left"):
        await writer.append([line("lost")])
    assert writer.state.healthy is False and "No space" in (writer.state.last_error or "")
    await anyio.sleep(1.3)  # its probe fails too: still unhealthy
    assert writer.state.healthy is False
    monkeypatch.setattr(os, "write", real_write)
    for _ in range(30):  # healthy again without any request (none comes while unready)
        if writer.state.healthy:
            break
        await anyio.sleep(0.1)
    assert writer.state.healthy is True
    await writer.append([line("after")])
    assert all_ids(writer.directory) == ["before", "after"]


def test_blocking_append_and_prune(tmp_path) -> None:
    w = SpoolWriter(tmp_path / "s", fsync=False)
    w.open()
    w.append_blocking([line("x")], timeout=5)
    w.request_seal()
    deadline = time.monotonic() + 5
    while not spool.sealed_segments(w.directory) and time.monotonic() < deadline:
        time.sleep(0.01)
    w.close()
    [segment] = spool.sealed_segments(tmp_path / "s")
    spool.mark_shipped(tmp_path / "s", segment)
    assert spool.prune_shipped(tmp_path / "s", keep_s=3600) == 0
    assert spool.prune_shipped(tmp_path / "s", keep_s=0) == 1


def test_valid_prefix() -> None:
    assert spool.valid_prefix(b"") == 0
    assert spool.valid_prefix(b'{"a": 1}\n{"b"') == 9
    assert spool.valid_prefix(b'{"a": 1}\n[1]\n{"c": 3}\n') == 9  # only objects are records
