"""Dynamic batching of predictions, the model running beside the event loop.

A model call has a fixed cost (about 1.5 ms for the default model, whatever the number of rows)
on top of a cost per row, so coding 50 concurrent single descriptions in one call is many times
cheaper than in 50 calls. Requests hand their descriptions to one `Batcher` task, which codes
everything queued so far in one call, up to ``max_items`` rows at a time (a larger request is
split across calls).

The calls run one at a time on one model thread, not on the event loop: while the model
computes (its matrix products release the interpreter's lock), the loop keeps reading requests,
answering those already coded and settling the prediction log's commits. With the model on the
loop, answers whose log commit finished during a call waited for the call to end, clients
drifted apart and calls held ~50 rows instead of ~100 (the log then cost 15-25 % of the
throughput instead of 6-10 %, `make bench`).

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
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
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


SHUTTING_DOWN = "the server is shutting down"  # what requests still waiting are told

_Part = tuple[_Job, int, int]  # a job's rows [start, stop) in one model call


class Batcher:
    def __init__(self, max_items: int = 128, on_call: Callable[[int], None] | None = None):
        self.max_items = max(1, max_items)
        self.on_call = on_call  # told the rows of each model call (the API's metrics)
        self._queue: collections.deque[_Job] = collections.deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._model_thread: ThreadPoolExecutor | None = None
        self.calls = 0
        self.rows = 0

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._model_thread = ThreadPoolExecutor(1, thread_name_prefix="autocode-model")
        self._task = asyncio.create_task(self._run(), name="batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._model_thread is not None:  # lets a call in flight finish (milliseconds)
            await asyncio.to_thread(self._model_thread.shutdown)
            self._model_thread = None
        while self._queue:
            job = self._queue.popleft()
            if not job.future.done():
                job.future.set_exception(RuntimeError(SHUTTING_DOWN))

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
                await self._call()

    async def _call(self) -> None:
        """One model call on the rows at the head of the queue, on the model thread."""
        parts = self._take()
        if not parts:
            return
        try:
            coded = await asyncio.get_running_loop().run_in_executor(
                self._model_thread, _code, parts
            )
        except asyncio.CancelledError:  # stopped during the call: no request left hanging
            for job, _, _ in parts:
                self._fail(job, RuntimeError(SHUTTING_DOWN))
            raise
        except Exception as exc:
            log.exception("prediction failed for %d rows", sum(b - a for _, a, b in parts))
            for job, _, _ in parts:
                self._fail(job, exc)
            return
        rows = sum(len(results) for results in coded)
        self.calls += 1
        self.rows += rows
        if self.on_call is not None:
            self.on_call(rows)
        for (job, _, _), results in zip(parts, coded, strict=True):
            job.results += results
            if len(job.results) == len(job.texts) and not job.future.done():
                job.future.set_result(job.results)

    def _take(self) -> list[_Part]:
        """The rows of the next call: from the head of the queue, one model, ≤ max_items."""
        parts: list[_Part] = []
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
        return parts

    def _fail(self, job: _Job, exc: Exception) -> None:
        if not job.future.done():
            job.future.set_exception(exc)
        with contextlib.suppress(ValueError):  # fully taken already
            self._queue.remove(job)


def _code(parts: list[_Part]) -> list[list[Coded]]:
    """The model call (on the model thread): each part's rows coded with its job's k and
    threshold."""
    predictor = parts[0][0].predictor
    texts = [t for job, a, b in parts for t in job.texts[a:b]]
    categorical = {
        name: [v for job, a, b in parts for v in job.values(name, a, b)]
        for name in predictor.categorical
    }
    proba = np.asarray(predictor.proba(texts, categorical or None))
    coded, row = [], 0
    for job, start, stop in parts:
        coded.append(predictor.top_k(proba[row : row + stop - start], job.k, job.threshold))
        row += stop - start
    return coded
