"""Dynamic batching between HTTP and the engines, in the spirit of TF Serving's batching scheduler.

Concurrent requests for the same model version are queued together and run as one engine call:
``/predict`` batches concatenate their sequences (all padded to the version's ``max_len``, so one shape
per version), and session steps of many sessions advance as one call per timestep (the idea of
Triton's sequence batcher). A request waits at most ``timeout_s`` for others to join; a batch never
exceeds ``max_batch_size`` requests; batches run on ``num_threads`` worker threads.

A request does not pay for a hand-off it does not need: when no batch is forming or running, a request
small enough (``cost`` at most ``inline_max_cost``) first lets the requests already read in this turn of
the event loop join it, and when none did it runs at once on the event loop. Handing it to a worker thread
and waking the loop back cost more than the engine call itself (py-spy at one connection: README,
Performance). Likewise a merged batch runs on the event loop when its total cost is within the bound and
no batch is running; costlier batches go to the worker threads, so a large one never stalls the loop. While
every worker thread is busy, what arrives keeps joining one batch per key, flushed when a worker is free (or
when it is full), not one small batch per turn of the event loop queued behind the running one. Before these
two rules, 8 connections cost more CPU per request than one (bench/results-peers.md): every request paid the
hand-off for batches of one to three.
"""

import asyncio
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

from models.serving.servable import Servable

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class _Queue(Generic[Item, Result]):
    run: Callable[[list[Item]], list[Result]]
    items: list[Item] = field(default_factory=list)
    futures: list["asyncio.Future[Result]"] = field(default_factory=list)
    #: The items' total cost; ``None`` once an item came without one (it then never runs inline).
    cost: int | None = 0


class BatchScheduler:
    """Merges concurrent requests that share a key into one call of that key's ``run`` function."""

    def __init__(
        self,
        max_batch_size: int = 256,
        timeout_s: float = 0.0,
        num_threads: int = 1,
        inline_max_cost: int = 0,
        on_batch: Callable[[Hashable, int], None] | None = None,
    ) -> None:
        self.max_batch_size = max_batch_size
        #: Told each batch's key and size as it starts (the metrics' batch-size histograms).
        self._on_batch = on_batch or (lambda key, size: None)
        self.timeout_s = timeout_s
        #: Largest ``cost`` a lone request may have to run on the event loop (0: never; a timeout waits anyway).
        self.inline_max_cost = inline_max_cost if timeout_s == 0 else 0
        self._queues: dict[Hashable, _Queue[Any, Any]] = {}
        self._executor = ThreadPoolExecutor(max_workers=num_threads, thread_name_prefix="batch")
        self._running: set[asyncio.Task[None]] = set()
        self._threads = num_threads
        #: Keys whose batch waits for a free worker thread.
        self._deferred: set[Hashable] = set()

    async def submit(
        self, key: Hashable, item: Item, run: Callable[[list[Item]], list[Result]], cost: int | None = None
    ) -> Result:
        """Queue ``item`` under ``key``; ``run`` maps a list of items to their results, in order.

        ``cost`` (the caller's measure of the engine work, e.g. input values) lets a small request or batch run
        inline; ``None`` always sends it to a worker thread."""
        loop = asyncio.get_running_loop()
        alone = key not in self._queues and not self._running
        queue = self._queues.setdefault(key, _Queue(run))
        future: asyncio.Future[Result] = loop.create_future()
        queue.items.append(item)
        queue.futures.append(future)
        queue.cost = None if cost is None or queue.cost is None else queue.cost + cost
        if alone and self._may_run_inline(cost):
            lone = False
            try:
                await asyncio.sleep(0)  # the requests already read in this turn of the loop join here
            finally:  # even when cancelled: a queue left behind would never be flushed
                if self._queues.get(key) is queue:
                    lone = len(queue.items) == 1
                    if lone:
                        del self._queues[key]
                    else:
                        self._flush(key)
            if lone:
                self._on_batch(key, 1)
                return run(queue.items)[0]
        elif len(queue.items) >= self.max_batch_size:
            self._flush(key)
        elif len(queue.items) == 1:
            loop.call_later(self.timeout_s, self._flush, key)
        return await future

    def _may_run_inline(self, cost: int | None) -> bool:
        """Whether work of ``cost`` may run on the event loop now: small enough, and no batch running."""
        return bool(self.inline_max_cost) and cost is not None and cost <= self.inline_max_cost and not self._running

    def _flush(self, key: Hashable) -> None:
        queue = self._queues.get(key)
        if queue is None or not queue.items:
            return
        if len(self._running) >= self._threads and len(queue.items) < self.max_batch_size:
            # Every worker is busy: the batch keeps growing until one is free (then _done flushes it), instead of
            # queueing behind it as one small batch per turn of the loop.
            self._deferred.add(key)
            return
        del self._queues[key]
        self._on_batch(key, len(queue.items))
        if self._may_run_inline(queue.cost):
            try:
                results = queue.run(queue.items)
            except Exception as exc:  # noqa: BLE001 - handed to every request of the batch
                _settle(queue, exc)
            else:
                _settle(queue, results)
            return
        task = asyncio.ensure_future(self._run(queue))
        self._running.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: "asyncio.Task[None]") -> None:
        self._running.discard(task)
        deferred, self._deferred = self._deferred, set()
        for key in deferred:
            self._flush(key)

    async def _run(self, queue: _Queue[Any, Any]) -> None:
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self._executor, queue.run, queue.items)
        except Exception as exc:  # noqa: BLE001 - handed to every request of the batch
            _settle(queue, exc)
            return
        _settle(queue, results)

    def close(self) -> None:
        """Stop the worker threads."""
        self._executor.shutdown(wait=False, cancel_futures=True)


def _settle(queue: _Queue[Any, Any], outcome: list[Any] | Exception) -> None:
    """Hand each waiting request of a batch its result, or every one of them the batch's error."""
    if isinstance(outcome, Exception):
        for future in queue.futures:
            if not future.done():
                future.set_exception(outcome)
        return
    for future, result in zip(queue.futures, outcome, strict=True):
        if not future.done():
            future.set_result(result)


StepItem = tuple[np.ndarray, np.ndarray, np.ndarray]
StepResult = tuple[np.ndarray, np.ndarray, np.ndarray]


def predict_batch(servable: Servable, batches: list[np.ndarray]) -> list[np.ndarray]:
    """Run several requests' padded batches as one engine call; split the outputs back."""
    if len(batches) == 1:
        return [servable.predict(batches[0])]
    probabilities = servable.predict(np.concatenate(batches))
    return np.split(probabilities, np.cumsum([len(b) for b in batches])[:-1])


def step_batch(servable: Servable, items: list[StepItem]) -> list[StepResult]:
    """Advance several sessions, each ``(values, h, c)``, through their values in one call per timestep.

    Sessions with fewer values drop out of the batch once they are done. Each result is the model's
    output after every one of that session's steps (``(steps, output_width)``) and its new ``(h, c)``.
    """
    # A lone session (the inline path): the row bookkeeping below cost as much as its engine call (py-spy).
    if len(items) == 1:
        values, h, c = items[0]
        probabilities = np.empty((len(values), servable.params.output_width), np.float32)
        for t in range(len(values)):
            p, h, c = servable.step(values[t : t + 1], h, c)
            probabilities[t] = p[0]
        return [(probabilities, h, c)]
    sequences = [values for values, _, _ in items]
    h = np.concatenate([h for _, h, _ in items])
    c = np.concatenate([c for _, _, c in items])
    lengths = np.array([len(s) for s in sequences])
    probabilities = [np.empty((n, servable.params.output_width), np.float32) for n in lengths]
    for t in range(int(lengths.max())):
        rows = np.flatnonzero(lengths > t)
        x_t = np.stack([sequences[i][t] for i in rows])
        p, h[rows], c[rows] = servable.step(x_t, h[rows], c[rows])
        for j, i in enumerate(rows):
            probabilities[i][t] = p[j]
    return [(probabilities[i], h[i : i + 1], c[i : i + 1]) for i in range(len(items))]
