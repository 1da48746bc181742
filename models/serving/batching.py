"""Dynamic batching between HTTP and the engines, in the spirit of TF Serving's batching scheduler.

Concurrent requests for the same model version are queued together and run as one engine call:
``/predict`` batches concatenate their sequences (all padded to the version's ``max_len``, so one shape
per version), and session steps of many sessions advance as one call per timestep (the idea of
Triton's sequence batcher). A request waits at most ``timeout_s`` for others to join; a batch never
exceeds ``max_batch_size`` requests; batches run on ``num_threads`` worker threads.

A lone request does not pay for batching it does not need: when no batch is forming or running, a request
small enough (``cost`` at most ``inline_max_cost``) first lets the requests already read in this turn of
the event loop join it, and when none did it runs at once on the event loop. Handing it to a worker thread
and waking the loop back cost more than the engine call itself (py-spy at one connection: README,
Performance). Under concurrency requests still merge into batches on the worker threads.
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

    async def submit(
        self, key: Hashable, item: Item, run: Callable[[list[Item]], list[Result]], cost: int | None = None
    ) -> Result:
        """Queue ``item`` under ``key``; ``run`` maps a list of items to their results, in order.

        ``cost`` (the caller's measure of the engine work, e.g. input values) lets a lone request run inline;
        ``None`` always queues it."""
        loop = asyncio.get_running_loop()
        alone = key not in self._queues and not self._running
        queue = self._queues.setdefault(key, _Queue(run))
        future: asyncio.Future[Result] = loop.create_future()
        queue.items.append(item)
        queue.futures.append(future)
        if alone and self.inline_max_cost and cost is not None and cost <= self.inline_max_cost:
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

    def _flush(self, key: Hashable) -> None:
        queue = self._queues.pop(key, None)
        if queue is not None and queue.items:
            self._on_batch(key, len(queue.items))
            task = asyncio.ensure_future(self._run(queue))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, queue: _Queue[Any, Any]) -> None:
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self._executor, queue.run, queue.items)
        except Exception as exc:  # noqa: BLE001 - handed to every request of the batch
            for future in queue.futures:
                if not future.done():
                    future.set_exception(exc)
            return
        for future, result in zip(queue.futures, results, strict=True):
            if not future.done():
                future.set_result(result)

    def close(self) -> None:
        """Stop the worker threads."""
        self._executor.shutdown(wait=False, cancel_futures=True)


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
