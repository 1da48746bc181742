"""The batch scheduler on its own, with a fake run function: no TensorFlow, milliseconds per test."""

import asyncio
import threading

import pytest

from models.serving.batching import BatchScheduler


class Recorder:
    """A ``run`` function that doubles its items and records each call's items and thread."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[int], int]] = []

    def __call__(self, items: list[int]) -> list[int]:
        self.calls.append((list(items), threading.get_ident()))
        return [2 * item for item in items]


async def _submit_together(batcher: BatchScheduler, run: Recorder, items: list[int], cost: int | None) -> list[int]:
    return list(await asyncio.gather(*(batcher.submit("k", item, run, cost=cost) for item in items)))


def test_a_lone_request_runs_inline_on_the_event_loop() -> None:
    batcher = BatchScheduler(inline_max_cost=100)
    run = Recorder()
    try:
        assert asyncio.run(batcher.submit("k", 21, run, cost=50)) == 42
    finally:
        batcher.close()
    assert run.calls == [([21], threading.get_ident())]


@pytest.mark.parametrize(
    ("inline_max_cost", "cost"),
    [(100, 101), (0, 0), (100, None)],
    ids=["costlier-than-the-bound", "inline-off", "no-cost-given"],
)
def test_a_lone_request_goes_to_the_worker_thread_unless_allowed_inline(inline_max_cost: int, cost: int | None) -> None:
    batcher = BatchScheduler(inline_max_cost=inline_max_cost)
    run = Recorder()
    try:
        assert asyncio.run(batcher.submit("k", 21, run, cost=cost)) == 42
    finally:
        batcher.close()
    assert [items for items, _ in run.calls] == [[21]]
    assert run.calls[0][1] != threading.get_ident()


def test_a_timeout_turns_inline_off() -> None:
    """A configured batching window is a request to wait for others: a lone request waits too."""
    assert BatchScheduler(timeout_s=0.001, inline_max_cost=100).inline_max_cost == 0


@pytest.mark.parametrize(("cost", "inline"), [(25, True), (26, False), (None, False)],
                         ids=["within-the-bound-together", "over-it-together", "no-cost-given"])
def test_concurrent_requests_merge_into_one_batch_inline_only_when_the_batch_is_small(cost: int | None, inline: bool) -> None:
    batcher = BatchScheduler(inline_max_cost=100)
    run = Recorder()
    try:
        assert asyncio.run(_submit_together(batcher, run, [1, 2, 3, 4], cost=cost)) == [2, 4, 6, 8]
    finally:
        batcher.close()
    assert [items for items, _ in run.calls] == [[1, 2, 3, 4]]
    assert (run.calls[0][1] == threading.get_ident()) is inline


def test_max_batch_size_splits_concurrent_requests() -> None:
    batcher = BatchScheduler(max_batch_size=2, inline_max_cost=100)
    run = Recorder()
    try:
        assert asyncio.run(_submit_together(batcher, run, [1, 2, 3, 4, 5], cost=1)) == [2, 4, 6, 8, 10]
    finally:
        batcher.close()
    assert sorted(items for items, _ in run.calls) == [[1, 2], [3, 4], [5]]


def test_requests_arriving_while_a_batch_runs_wait_for_it_and_then_run_as_one_batch() -> None:
    """Nothing runs beside a busy worker thread: what arrives meanwhile grows into one batch, run when it is free
    (at 8 connections one small batch per turn of the loop had queued behind it instead)."""
    batcher = BatchScheduler(inline_max_cost=100)
    started = threading.Event()
    release = threading.Event()
    run = Recorder()

    def slow(items: list[int]) -> list[int]:
        started.set()
        release.wait(5)
        return run(items)

    async def scenario() -> list[int]:
        first = asyncio.ensure_future(batcher.submit("k", 1, slow))
        await asyncio.to_thread(started.wait, 5)
        later = []
        for item in (2, 3, 4):
            later.append(asyncio.ensure_future(batcher.submit("k", item, run, cost=1)))
            await asyncio.sleep(0.005)  # each in a turn of the loop of its own
        assert run.calls == []  # the first batch still runs: nothing ran beside it
        release.set()
        return [await first] + [await future for future in later]

    try:
        assert asyncio.run(scenario()) == [2, 4, 6, 8]
    finally:
        batcher.close()
    assert [items for items, _ in run.calls] == [[1], [2, 3, 4]]


def test_an_error_reaches_the_inline_caller() -> None:
    batcher = BatchScheduler(inline_max_cost=100)

    def fails(items: list[int]) -> list[int]:
        raise ValueError("engine failed")

    try:
        with pytest.raises(ValueError, match="engine failed"):
            asyncio.run(batcher.submit("k", 1, fails, cost=1))
    finally:
        batcher.close()


def test_a_cancelled_first_request_does_not_strand_those_that_joined_it() -> None:
    batcher = BatchScheduler(inline_max_cost=100)
    run = Recorder()

    async def scenario() -> int:
        first = asyncio.ensure_future(batcher.submit("k", 1, run, cost=1))
        second = asyncio.ensure_future(batcher.submit("k", 2, run, cost=1))
        await asyncio.sleep(0)  # first now waits for others to join, and second has joined it
        first.cancel()
        answer = await asyncio.wait_for(second, 5)
        assert first.cancelled()
        return answer

    try:
        assert asyncio.run(scenario()) == 4
    finally:
        batcher.close()


def test_an_error_of_an_inline_batch_reaches_every_request_of_it() -> None:
    batcher = BatchScheduler(inline_max_cost=100)

    def fails(items: list[int]) -> list[int]:
        raise ValueError(f"engine failed on {len(items)}")

    async def scenario() -> list[BaseException | int]:
        return await asyncio.gather(*(batcher.submit("k", i, fails, cost=1) for i in range(3)), return_exceptions=True)

    try:
        outcomes = asyncio.run(scenario())
    finally:
        batcher.close()
    assert [str(outcome) for outcome in outcomes] == ["engine failed on 3"] * 3
