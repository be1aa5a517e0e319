"""Dynamic batching: batch formation, immediate dispatch, error delivery, draining."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from rtdetr_edge.server.batcher import BatchInfo, DynamicBatcher


class RecordingModel:
    def __init__(self, delay: float = 0.0, fail_on: int | None = None) -> None:
        self.delay = delay
        self.fail_on = fail_on
        self.batches: list[list[int]] = []
        self.threads: set[str] = set()

    def __call__(self, items: list[int]) -> list[int]:
        self.threads.add(threading.current_thread().name)
        self.batches.append(list(items))
        if self.fail_on is not None and self.fail_on in items:
            raise RuntimeError("predictor exploded")
        time.sleep(self.delay)
        return [item * 10 for item in items]


def run(coroutine):  # type: ignore[no-untyped-def]
    return asyncio.run(coroutine)


def test_single_request_dispatches_immediately() -> None:
    async def scenario() -> tuple[int, BatchInfo, float]:
        model = RecordingModel()
        batcher = DynamicBatcher(model, max_batch_size=4, window_seconds=1.0)
        batcher.start()
        started = time.perf_counter()
        result, info = await batcher.submit(7)
        elapsed = time.perf_counter() - started
        await batcher.close()
        return result, info, elapsed

    result, info, elapsed = run(scenario())
    assert result == 70 and info.batch_size == 1
    assert elapsed < 0.5, "with nothing else in flight the 1 s window must not be waited out"


def test_concurrent_requests_form_batches_up_to_the_limit() -> None:
    async def scenario() -> RecordingModel:
        model = RecordingModel(delay=0.05)
        batcher = DynamicBatcher(model, max_batch_size=4, window_seconds=0.05)
        batcher.start()
        results = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
        assert [r for r, _ in results] == [i * 10 for i in range(10)]
        await batcher.close()
        return model

    model = run(scenario())
    assert max(len(b) for b in model.batches) == 4
    assert sum(len(b) for b in model.batches) == 10
    assert len(model.batches) <= 4
    assert model.threads == {"inference_0"}, "one dedicated inference thread"


def test_waits_for_requests_still_being_preprocessed() -> None:
    async def scenario() -> list[list[int]]:
        model = RecordingModel()
        batcher = DynamicBatcher(model, max_batch_size=4, window_seconds=0.5)
        batcher.start()

        async def slow_arrival() -> int:
            with batcher.preparing():
                await asyncio.sleep(0.05)  # "preprocessing"
            result, _ = await batcher.submit(2)
            return result

        async def first() -> int:
            await asyncio.sleep(0.01)
            result, _ = await batcher.submit(1)
            return result

        await asyncio.gather(slow_arrival(), first())
        await batcher.close()
        return model.batches

    assert run(scenario()) == [[1, 2]]


def test_window_bounds_the_wait() -> None:
    async def scenario() -> tuple[list[list[int]], float]:
        model = RecordingModel()
        batcher = DynamicBatcher(model, max_batch_size=4, window_seconds=0.02)
        batcher.start()
        with batcher.preparing():  # someone preprocessing forever
            started = time.perf_counter()
            await batcher.submit(1)
            elapsed = time.perf_counter() - started
        await batcher.close()
        return model.batches, elapsed

    batches, elapsed = run(scenario())
    assert batches == [[1]] and 0.015 <= elapsed < 0.5


def test_a_failing_batch_fails_its_requests_and_the_batcher_keeps_going() -> None:
    async def scenario() -> None:
        model = RecordingModel(fail_on=3)
        batcher = DynamicBatcher(model, max_batch_size=1, window_seconds=0.0)
        batcher.start()
        with pytest.raises(RuntimeError, match="exploded"):
            await batcher.submit(3)
        result, _ = await batcher.submit(4)
        assert result == 40
        await batcher.close()

    run(scenario())


def test_close_drains_queued_work() -> None:
    async def scenario() -> list[int]:
        model = RecordingModel(delay=0.02)
        batcher = DynamicBatcher(model, max_batch_size=2, window_seconds=0.0)
        batcher.start()
        tasks = [asyncio.create_task(batcher.submit(i)) for i in range(5)]
        await asyncio.sleep(0)
        await batcher.close()
        return [(await t)[0] for t in tasks]

    assert run(scenario()) == [0, 10, 20, 30, 40]


def test_requests_that_waited_past_the_budget_are_shed_and_the_rest_keep_their_queue_bound() -> None:
    """A burst of 12 on a model that takes 0.1 s per batch of 2: with a 0.25 s queue budget the
    tail of the burst is refused (OverloadedError), and no answered request waited longer."""
    from rtdetr_edge.errors import OverloadedError

    async def scenario() -> tuple[list[object], list[str]]:
        shed: list[str] = []
        batcher = DynamicBatcher(RecordingModel(delay=0.1), max_batch_size=2, window_seconds=0.0,
                                 max_queue_seconds=0.25, on_shed=shed.append)  # fmt: skip
        batcher.start()
        outcomes = await asyncio.gather(*(batcher.submit(i) for i in range(12)), return_exceptions=True)
        await batcher.close()
        return outcomes, shed

    outcomes, shed = run(scenario())
    answered = [info for outcome in outcomes if not isinstance(outcome, BaseException) for info in [outcome[1]]]
    refused = [outcome for outcome in outcomes if isinstance(outcome, OverloadedError)]
    assert len(answered) + len(refused) == 12 and refused and answered, outcomes
    assert all(info.queue_seconds <= 0.25 for info in answered), [info.queue_seconds for info in answered]
    assert shed == ["expired"] * len(refused)
    assert all(error.http_status == 503 and error.retry_after_seconds >= 1 for error in refused)


def test_a_new_request_is_refused_on_arrival_when_its_predicted_wait_exceeds_the_budget() -> None:
    from rtdetr_edge.errors import OverloadedError

    async def scenario() -> tuple[float, float, list[str]]:
        shed: list[str] = []
        batcher = DynamicBatcher(RecordingModel(delay=0.1), max_batch_size=1, window_seconds=0.0,
                                 max_queue_seconds=0.25, on_shed=shed.append)  # fmt: skip
        batcher.start()
        batcher.admit()  # nothing measured yet: never refused on a guess
        await batcher.submit(0)  # one batch measured: ~0.1 s
        tasks = [asyncio.create_task(batcher.submit(i)) for i in range(1, 6)]
        await asyncio.sleep(0.02)  # one runs, four wait: a newcomer would wait ~0.5 s
        predicted = batcher.predicted_wait()
        with pytest.raises(OverloadedError, match="queue budget") as refused:
            batcher.admit()
        await asyncio.gather(*tasks, return_exceptions=True)
        await batcher.close()
        return predicted, refused.value.retry_after_seconds, shed

    predicted, retry_after, shed = run(scenario())
    assert 0.35 < predicted < 0.8 and retry_after == 1 and shed[0] == "predicted", (predicted, retry_after, shed)


def test_without_a_budget_nothing_is_shed() -> None:
    async def scenario() -> list[object]:
        batcher = DynamicBatcher(RecordingModel(delay=0.05), max_batch_size=2, window_seconds=0.0)
        batcher.start()
        outcomes = await asyncio.gather(*(batcher.submit(i) for i in range(8)), return_exceptions=True)
        batcher.admit()
        await batcher.close()
        return outcomes

    assert all(not isinstance(outcome, BaseException) for outcome in run(scenario()))
