"""Dynamic batching: concurrent requests share model calls, each gets exactly its own results
(its k, its threshold, its model), large requests are split."""

from __future__ import annotations

import itertools

import anyio
import pytest

from autocode.serve.batching import Batcher
from autocode.serve.predictor import Predictor

pytestmark = pytest.mark.anyio

TEXTS = ["boulangerie", "restaurant", "pizzeria à emporter", "glacier", "traiteur", "charcuterie"]


def same(got, expected) -> None:
    """Equal results; probabilities to float32 precision (matrix products may round the last
    bit differently for different batch shapes)."""
    assert [c.codes for c in got] == [c.codes for c in expected]
    assert [c.auto for c in got] == [c.auto for c in expected]
    for a, b in zip(got, expected, strict=True):
        assert a.probabilities == pytest.approx(b.probabilities, abs=1e-6)
        assert a.ic == pytest.approx(b.ic, abs=1e-6)


@pytest.fixture(scope="module")
def predictor(small_coder) -> Predictor:
    return Predictor(small_coder)


async def test_concurrent_requests_share_model_calls(predictor) -> None:
    batcher = Batcher(max_items=8)
    batcher.start()
    results: dict[int, list] = {}

    async def request(index: int) -> None:
        texts = [TEXTS[(index + i) % len(TEXTS)] for i in range(1 + index % 3)]
        k, threshold = 1 + index % 4, [0.0, 0.3, 2.0][index % 3]
        coded = await batcher.predict(predictor, texts, None, k, threshold)
        same(coded, predictor.predict(texts, None, k, threshold))  # as if coded alone
        results[index] = coded

    try:
        async with anyio.create_task_group() as group:
            for index in range(40):
                group.start_soon(request, index)
    finally:
        await batcher.stop()
    assert len(results) == 40 and batcher.rows == sum(1 + i % 3 for i in range(40))
    assert batcher.calls < 40  # batched: fewer model calls than requests
    assert all(len(c.codes) == 1 + i % 4 for i, r in results.items() for c in r)


async def test_large_requests_are_split_and_models_never_mixed(predictor, small_coder) -> None:
    other = Predictor(small_coder)  # another model object (a hot reload)
    batcher = Batcher(max_items=4)
    batcher.start()
    try:
        big = [TEXTS[i % len(TEXTS)] for i in range(10)]
        async with anyio.create_task_group() as group:
            outcome = {}

            async def run(name, model, texts):
                outcome[name] = await batcher.predict(model, texts, None, 3, 0.5)

            group.start_soon(run, "big", predictor, big)
            group.start_soon(run, "other", other, TEXTS[:2])
            group.start_soon(run, "small", predictor, TEXTS[:1])
        same(outcome["big"], predictor.predict(big, None, 3, 0.5))
        same(outcome["other"], other.predict(TEXTS[:2], None, 3, 0.5))
        same(outcome["small"], predictor.predict(TEXTS[:1], None, 3, 0.5))
        assert batcher.calls >= 4  # 13 rows in calls of at most 4, per model
    finally:
        await batcher.stop()


async def test_a_failing_call_fails_its_requests_only(predictor) -> None:
    class Broken(Predictor):
        def proba(self, texts, categorical=None):
            raise ValueError("broken model")

    broken = Broken(predictor.coder)
    batcher = Batcher()
    batcher.start()
    try:
        with pytest.raises(ValueError, match="broken model"):
            await batcher.predict(broken, TEXTS[:2], None, 2, 0.5)
        assert await batcher.predict(predictor, TEXTS[:1], None, 2, 0.5)
    finally:
        await batcher.stop()


class Slow(Predictor):
    """A model whose calls take ``delay`` seconds of blocking work (as a real one: not async)."""

    delay = 0.3

    def proba(self, texts, categorical=None):
        import time

        time.sleep(self.delay)
        return super().proba(texts, categorical)


async def test_the_event_loop_keeps_serving_while_the_model_computes(predictor) -> None:
    """The model runs beside the loop: requests arriving during a call are read meanwhile and
    coded together in the next call, and the loop never stalls for a call's duration."""
    slow = Slow(predictor.coder)
    batcher = Batcher()
    batcher.start()
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(anyio.current_time())
            await anyio.sleep(0.01)

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(ticker)
            group.start_soon(batcher.predict, slow, TEXTS[:1], None, 1, 0.5)
            await anyio.sleep(0.05)  # the first call is running now
            outcome = {}

            async def late(index: int) -> None:
                outcome[index] = await batcher.predict(slow, [TEXTS[index]], None, 1, 0.5)

            for index in range(1, 4):
                group.start_soon(late, index)
            while len(outcome) < 3:
                await anyio.sleep(0.01)
            group.cancel_scope.cancel()
    finally:
        await batcher.stop()
    assert batcher.calls == 2  # the first alone, then the three that arrived during it
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert max(gaps) < Slow.delay / 2  # the loop ticked on through both calls
    for index, coded in outcome.items():
        same(coded, predictor.predict([TEXTS[index]], None, 1, 0.5))


async def test_stopping_during_a_call_answers_its_requests(predictor) -> None:
    slow = Slow(predictor.coder)
    batcher = Batcher()
    batcher.start()
    outcome: dict[str, BaseException] = {}

    async def request() -> None:
        try:
            await batcher.predict(slow, TEXTS[:2], None, 1, 0.5)
        except RuntimeError as exc:
            outcome["error"] = exc

    async with anyio.create_task_group() as group:
        group.start_soon(request)
        await anyio.sleep(0.05)  # in the model call
        with anyio.fail_after(5):
            await batcher.stop()
    assert "shutting down" in str(outcome["error"])


def test_response_json_is_assembled_correctly(predictor) -> None:
    import json

    for coded in predictor.predict([*TEXTS, 'quote " backslash \\ é'], None, 5, 0.5):
        assert json.loads(predictor.candidates_json(coded)) == predictor.candidates(coded)
