"""Dynamic batching of predictions on the event loop.

A model call has a fixed cost (about 2 ms for the TF-IDF + fastText ensemble, whatever the
number of rows) on top of a small cost per row, so coding 50 concurrent single descriptions in
one call is many times cheaper than in 50 calls. Requests hand their descriptions to one
`Batcher` task, which codes everything queued so far in one call, up to ``max_items`` rows at a
time (a larger request is split across calls), and yields to the event loop between calls so
that new requests are read meanwhile.

No request waits for others to arrive: when the server is idle, a request is coded at once (the
queue holds only it). Batches form by themselves under load, from the requests that arrived
while the previous call ran (the same idea as the prediction log's group commit).

Every row is coded by the model its request captured on arrival (a hot reload never mixes
versions inside a request), with the request's own ``k`` and threshold.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from autocode.serve.predictor import Coded, Predictor

log = logging.getLogger(__name__)


@dataclass
class _Job:
    predictor: Predictor
    texts: Sequence[str]
    categorical: Mapping[str, Sequence[Any]] | None
    k: int
    threshold: float
    future: asyncio.Future[list[Coded]]
    offset: int = 0  # rows handed to a model call so far
    results: list[Coded] = field(default_factory=list)

    def values(self, name: str, start: int, stop: int) -> list[Any]:
        column = (self.categorical or {}).get(name)
        return list(column[start:stop]) if column is not None else [None] * (stop - start)


class Batcher:
    def __init__(self, max_items: int = 128):
        self.max_items = max(1, max_items)
        self._queue: collections.deque[_Job] = collections.deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.calls = 0
        self.rows = 0

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        while self._queue:
            job = self._queue.popleft()
            if not job.future.done():
                job.future.set_exception(RuntimeError("the server is shutting down"))

    async def predict(
        self,
        predictor: Predictor,
        texts: Sequence[str],
        categorical: Mapping[str, Sequence[Any]] | None,
        k: int,
        threshold: float,
    ) -> list[Coded]:
        if self._task is None:  # not started (direct use): code at once
            return predictor.predict(texts, categorical, k, threshold)
        future: asyncio.Future[list[Coded]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Job(predictor, texts, categorical, k, threshold, future))
        self._wake.set()
        return await future

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                self._call()
                await asyncio.sleep(0)  # read the requests that arrived meanwhile

    def _call(self) -> None:
        """One model call on the rows at the head of the queue (one model, ≤ max_items)."""
        parts: list[tuple[_Job, int, int]] = []
        taken = 0
        while self._queue and taken < self.max_items:
            job = self._queue[0]
            if job.future.done():  # cancelled: drop it
                self._queue.popleft()
                continue
            if parts and job.predictor is not parts[0][0].predictor:
                break
            start = job.offset
            stop = min(len(job.texts), start + self.max_items - taken)
            parts.append((job, start, stop))
            taken += stop - start
            job.offset = stop
            if stop == len(job.texts):
                self._queue.popleft()
        if not parts:
            return
        predictor = parts[0][0].predictor
        texts = [t for job, a, b in parts for t in job.texts[a:b]]
        categorical = {
            name: [v for job, a, b in parts for v in job.values(name, a, b)]
            for name in predictor.categorical
        }
        try:
            proba = predictor.proba(texts, categorical or None)
        except Exception as exc:
            log.exception("prediction failed for %d rows", len(texts))
            for job, _, _ in parts:
                self._fail(job, exc)
            return
        self.calls += 1
        self.rows += len(texts)
        row = 0
        for job, start, stop in parts:
            count = stop - start
            job.results += predictor.top_k(
                np.asarray(proba[row : row + count]), job.k, job.threshold
            )
            row += count
            if len(job.results) == len(job.texts) and not job.future.done():
                job.future.set_result(job.results)

    def _fail(self, job: _Job, exc: Exception) -> None:
        if not job.future.done():
            job.future.set_exception(exc)
        with contextlib.suppress(ValueError):  # fully taken already
            self._queue.remove(job)
