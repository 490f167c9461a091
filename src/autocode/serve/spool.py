"""The prediction log's local spool: JSON-lines segments written by a group-commit writer.

Guarantee (what `SpoolWriter.append` means when it returns): the records are in the segment
file and the file was ``fdatasync``-ed (its data and size), and the segment's directory entry
was fsync-ed when the segment was created. The API awaits `append` before sending a response,
so a record exists on disk for every response sent, whatever happens next (``kill -9``, OOM,
power loss: as long as the disk honours flushes).

Group commit: requests hand their lines to one writer thread. While it writes and syncs one
group, the next requests queue up; it then writes all of them with one ``write`` and one
``fdatasync``. Latency stays about one sync under load, and throughput is no longer bounded by
the number of syncs a disk does per second.

Layout of the spool directory (one server per directory: an exclusive ``flock`` on ``.lock``)::

    open/<date>_<segment>.jsonl      the segment being written (at most one)
    sealed/<date>_<segment>.jsonl    complete, waiting to be shipped
    shipped/<date>_<segment>.jsonl   shipped (kept for a while, then deleted)

``<date>`` (``YYYY-MM-DD``, UTC) is the date of every record of the segment: the writer seals the
segment when the date changes. ``<segment>`` (``20261123T193249123456Z-<instance>-<boot>-000001``)
is unique across servers and restarts; shipping derives the S3 key from it, so a segment
always goes to the same key.

A segment is sealed when it reaches its size limit or age limit, when the date changes, and at
shutdown. At start-up, segments left in ``open/`` by a crash are recovered: cut after their last
complete JSON line (a torn or unsynced tail holds no acknowledged record), synced, and sealed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

OPEN, SEALED, SHIPPED = "open", "sealed", "shipped"
SUFFIX = ".jsonl"
_NAME = re.compile(r"^(\d{4}-\d{2}-\d{2})_([A-Za-z0-9.-]+)\.jsonl$")
_sync = getattr(os, "fdatasync", os.fsync)
PROBE_INTERVAL_S = 1.0  # how often an unhealthy spool checks whether it can write again

#: One record: its partition date (``YYYY-MM-DD``) and its JSON line (ending with ``\n``).
Line = tuple[str, bytes]


class SpoolError(Exception):
    """The spool cannot be used (locked by another server, unwritable, closed)."""


class SpoolObserver(Protocol):
    def spool_committed(self, records: int, groups: int, seconds: float) -> None: ...

    def spool_failed(self) -> None: ...

    def spool_sealed(self) -> None: ...


@dataclass(frozen=True)
class Segment:
    """A segment file of the spool."""

    path: Path
    date: str  # partition date, YYYY-MM-DD
    id: str

    @property
    def name(self) -> str:
        return self.path.name

    @classmethod
    def parse(cls, path: Path) -> Segment | None:
        match = _NAME.match(path.name)
        return cls(path, match.group(1), match.group(2)) if match else None


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def instance_name(raw: str | None = None) -> str:
    """A file-name-safe server name (letters, digits, dots, dashes)."""
    import socket

    name = re.sub(r"[^A-Za-z0-9.-]+", "-", raw or socket.gethostname()).strip("-.")
    return (name or "server")[:63]


@dataclass
class _Pending:
    lines: Sequence[Line]
    loop: asyncio.AbstractEventLoop | None
    future: Any  # asyncio.Future (loop set) or concurrent.futures.Future


@dataclass
class _Active:
    segment: Segment
    fd: int
    opened: float  # monotonic
    size: int = 0  # bytes synced (or written, without fsync)
    records: int = 0


@dataclass
class SpoolState:
    healthy: bool = True
    last_error: str | None = None
    records: int = 0
    groups: int = 0
    sealed: int = 0
    recovered: list[str] = field(default_factory=list)


class SpoolWriter:
    """Group-commit writer of the spool (one thread). Use `open`, `append`, `close`."""

    def __init__(
        self,
        directory: Path,
        *,
        instance: str | None = None,
        fsync: bool = True,
        max_bytes: int = 16 * 1024 * 1024,
        max_age_s: float = 60.0,
        observer: SpoolObserver | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.directory = Path(directory)
        self.instance = instance_name(instance)
        self.fsync = fsync
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.observer = observer
        self.clock = clock
        self.state = SpoolState()
        self._boot = secrets.token_hex(3)
        self._seq = 0
        self._cond = threading.Condition()
        self._queue: list[_Pending] = []
        self._stopping = False
        self._seal_requested = False
        self._closed = True
        self._active: _Active | None = None
        self._thread: threading.Thread | None = None
        self._lock_fd: int | None = None

    # -- life cycle ---------------------------------------------------------------------------
    def open(self) -> None:
        """Lock the spool, recover segments left open by a crash, start the writer thread."""
        for sub in (OPEN, SEALED, SHIPPED):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise SpoolError(
                f"the prediction log spool {self.directory} is used by another server "
                "(one server per spool directory)"
            ) from None
        self.state.recovered = recover(self.directory)
        self._closed = False
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="autocode-spool", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, seal the open segment, stop the thread, release the lock."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- appending ----------------------------------------------------------------------------
    async def append(self, lines: Sequence[Line]) -> None:
        """Return once ``lines`` are durable (see the module docstring); raises `SpoolError`."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._enqueue(_Pending(lines, loop, future))
        await future

    def append_blocking(self, lines: Sequence[Line], timeout: float | None = None) -> None:
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._enqueue(_Pending(lines, None, future))
        future.result(timeout)

    def request_seal(self) -> None:
        """Seal the open segment soon; records appended after this call go to the next one."""
        with self._cond:
            self._seal_requested = True
            self._cond.notify()

    def _enqueue(self, pending: _Pending) -> None:
        with self._cond:
            if self._closed:
                raise SpoolError("the prediction log is closed")
            self._queue.append(pending)
            self._cond.notify()

    # -- the writer thread --------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._queue or self._stopping or self._seal_requested):
                    wait = self._age_left()
                    if wait is not None and wait <= 0:
                        break
                    if not self.state.healthy:  # no traffic comes while unready: look ourselves
                        wait = PROBE_INTERVAL_S if wait is None else min(wait, PROBE_INTERVAL_S)
                    if not self._cond.wait(wait) and not self.state.healthy:
                        break
                batch, self._queue = self._queue, []
                seal, self._seal_requested = self._seal_requested, False
                stopping = self._stopping and not batch
            if seal:  # requested after the records before it were acknowledged: seal them
                self._seal_active()
            if batch:
                self._commit(batch)
            elif not self.state.healthy:
                self._probe()
            age = self._age_left()
            full = self._active is not None and self._active.size >= self.max_bytes
            if stopping or full or (age is not None and age <= 0):
                self._seal_active()
            if stopping:
                return

    def _age_left(self) -> float | None:
        active = self._active
        if active is None or active.records == 0:
            return None
        return self.max_age_s - (time.monotonic() - active.opened)

    def _commit(self, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        records = 0
        error: BaseException | None = None
        try:
            chunk: list[bytes] = []
            chunk_size = 0
            for pending in batch:
                for date, line in pending.lines:
                    active = self._active
                    if (
                        active is None
                        or active.segment.date != date
                        or (active.records and active.size + chunk_size >= self.max_bytes)
                    ):
                        if chunk:
                            self._write(chunk)
                            chunk, chunk_size = [], 0
                        self._seal_active()
                        self._open_segment(date)
                    chunk.append(line)
                    chunk_size += len(line)
                    records += 1
            if chunk:
                self._write(chunk)
        except OSError as exc:
            error = exc
            self._failed(exc)
        else:
            elapsed = time.perf_counter() - started
            self.state.healthy = True
            self.state.records += records
            self.state.groups += 1
            if self.observer is not None:
                self.observer.spool_committed(records, len(batch), elapsed)
        self._resolve(batch, error)

    def _write(self, chunk: list[bytes]) -> None:
        active = self._active
        assert active is not None
        data = memoryview(b"".join(chunk))
        written = 0
        try:
            while written < len(data):
                written += os.write(active.fd, data[written:])
            if self.fsync:
                _sync(active.fd)
        except OSError:
            # leave no partial line behind: cut back to what was complete before this write
            with contextlib.suppress(OSError):
                os.ftruncate(active.fd, active.size)
            raise
        active.size += len(data)
        active.records += len(chunk)

    def _open_segment(self, date: str) -> None:
        self._seq += 1
        opened = datetime.fromtimestamp(self.clock(), UTC).strftime("%Y%m%dT%H%M%S%fZ")
        segment_id = f"{opened}-{self.instance}-{self._boot}-{self._seq:06d}"
        path = self.directory / OPEN / f"{date}_{segment_id}{SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            if self.fsync:
                fsync_dir(path.parent)  # the new file's directory entry is durable too
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        self._active = _Active(Segment(path, date, segment_id), fd, time.monotonic())

    def _seal_active(self) -> None:
        active, self._active = self._active, None
        if active is None:
            return
        try:
            os.close(active.fd)
            if active.records == 0:
                active.segment.path.unlink(missing_ok=True)
                return
            seal(self.directory, active.segment.path, fsync=self.fsync)
            self.state.sealed += 1
            if self.observer is not None:
                self.observer.spool_sealed()
        except OSError as exc:  # left in open/: recovered and sealed at the next start
            log.error("cannot seal spool segment %s: %s", active.segment.path, exc)
            self._failed(exc)

    def _probe(self) -> None:
        """After a failure: can the spool take a write again? (A probe file, synced, removed.)"""
        path = self.directory / ".probe"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, b"\0" * 4096)
                _sync(fd)
            finally:
                os.close(fd)
                path.unlink(missing_ok=True)
        except OSError as exc:
            self.state.last_error = f"{type(exc).__name__}: {exc}"
            return
        log.info("the prediction log can be written again")
        self.state.healthy = True

    def _failed(self, exc: OSError) -> None:
        self.state.healthy = False
        self.state.last_error = f"{type(exc).__name__}: {exc}"
        log.error("prediction log write failed: %s", exc)
        if self.observer is not None:
            self.observer.spool_failed()
        active = self._active
        if active is not None and active.records == 0:  # nothing acknowledged in it: drop it
            self._active = None
            with contextlib.suppress(OSError):
                os.close(active.fd)
                active.segment.path.unlink()

    @staticmethod
    def _resolve(batch: list[_Pending], error: BaseException | None) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        for pending in batch:
            if pending.loop is None:
                if error is None:
                    pending.future.set_result(None)
                else:
                    pending.future.set_exception(SpoolError(str(error)))
            else:
                by_loop.setdefault(pending.loop, []).append(pending.future)
        for loop, futures in by_loop.items():
            with contextlib.suppress(RuntimeError):  # loop closed: nobody is waiting any more
                loop.call_soon_threadsafe(_settle, futures, error)


def _settle(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for future in futures:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(SpoolError(f"the prediction log cannot be written: {error}"))


# -- segments on disk -----------------------------------------------------------------------------
def seal(directory: Path, path: Path, *, fsync: bool = True) -> Path:
    """Move a complete segment from ``open/`` to ``sealed/`` (synced: data, then both dirs)."""
    if fsync:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    target = directory / SEALED / path.name
    os.replace(path, target)
    if fsync:
        fsync_dir(target.parent)
        fsync_dir(path.parent)
    return target


def recover(directory: Path) -> list[str]:
    """Seal the segments a crashed server left in ``open/``; returns their names.

    Each is cut after its last complete, valid JSON line: what follows was never acknowledged
    (a torn write, or blocks a power loss left unwritten)."""
    recovered = []
    for path in sorted((directory / OPEN).glob(f"*{SUFFIX}")):
        data = path.read_bytes()
        keep = valid_prefix(data)
        if keep == 0:
            path.unlink()
            fsync_dir(path.parent)
            continue
        if keep < len(data):
            log.warning(
                "spool segment %s: dropping a torn tail of %d bytes", path.name, len(data) - keep
            )
            with path.open("r+b") as handle:
                handle.truncate(keep)
        seal(directory, path)
        recovered.append(path.name)
    return recovered


def valid_prefix(data: bytes) -> int:
    """Length of the longest prefix of ``data`` made of complete lines holding JSON objects."""
    end = 0
    while end < len(data):
        newline = data.find(b"\n", end)
        if newline < 0:
            break
        try:
            if not isinstance(json.loads(data[end:newline]), dict):
                break
        except ValueError:
            break
        end = newline + 1
    return end


def sealed_segments(directory: Path) -> list[Segment]:
    """Sealed segments, oldest first."""
    out = []
    for path in (directory / SEALED).glob(f"*{SUFFIX}"):
        segment = Segment.parse(path)
        if segment is not None:
            out.append(segment)
    return sorted(out, key=lambda s: (s.date, s.id))


def mark_shipped(directory: Path, segment: Segment) -> None:
    target = directory / SHIPPED / segment.name
    os.replace(segment.path, target)
    os.utime(target)  # the retention clock starts now


def prune_shipped(directory: Path, keep_s: float, now: float | None = None) -> int:
    now = time.time() if now is None else now
    removed = 0
    for path in (directory / SHIPPED).glob(f"*{SUFFIX}"):
        with contextlib.suppress(FileNotFoundError):
            if now - path.stat().st_mtime >= keep_s:
                path.unlink()
                removed += 1
    return removed


def read_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
