"""Step batching: steps of many sessions on one model version, computed together.

In the spirit of Triton's sequence batcher: each session's state stays its own, but the steps that
arrive together run as one engine call per timestep over all of them, not one call per session.
Engine work runs on one worker thread so the event loop never waits on it.
"""

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from models.servable import Servable


@dataclass
class _PendingStep:
    values: np.ndarray
    h: np.ndarray
    c: np.ndarray
    future: "asyncio.Future[tuple[np.ndarray, np.ndarray, np.ndarray]]"


def run_steps(
    servable: Servable, sequences: list[np.ndarray], h: np.ndarray, c: np.ndarray
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Advance ``len(sequences)`` sessions through their values; row ``i`` of ``h``/``c`` is session ``i``.

    Sessions with fewer values drop out of the batch once they are done. Returns each session's
    probability after every one of its steps, and the new states.
    """
    lengths = np.array([len(s) for s in sequences])
    probabilities = [np.empty(n, np.float64) for n in lengths]
    h, c = h.copy(), c.copy()
    for t in range(int(lengths.max())):
        rows = np.flatnonzero(lengths > t)
        x_t = np.array([sequences[i][t] for i in rows], dtype=sequences[rows[0]].dtype)
        p, h[rows], c[rows] = servable.step(x_t, h[rows], c[rows])
        for j, i in enumerate(rows):
            probabilities[i][t] = p[j]
    return probabilities, h, c


class StepBatcher:
    """Merges concurrent step requests per model version into batches of at most ``max_batch`` sessions.

    A step waits at most ``timeout_s`` for others to join (0: only those already queued in this turn
    of the event loop), so a lone request is never held back for long.
    """

    def __init__(self, max_batch: int = 256, timeout_s: float = 0.0) -> None:
        self.max_batch = max_batch
        self.timeout_s = timeout_s
        self._pending: dict[Servable, list[_PendingStep]] = {}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="step-batch")
        self._running: set[asyncio.Task[None]] = set()

    async def step(
        self, servable: Servable, values: np.ndarray, h: np.ndarray, c: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Advance one session ``(h, c)`` through ``values``; returns ``(probabilities, h', c')``."""
        loop = asyncio.get_running_loop()
        pending = _PendingStep(values, h, c, loop.create_future())
        batch = self._pending.setdefault(servable, [])
        batch.append(pending)
        if len(batch) >= self.max_batch:
            self._flush(servable)
        elif len(batch) == 1:
            loop.call_later(self.timeout_s, self._flush, servable)
        return await pending.future

    def _flush(self, servable: Servable) -> None:
        batch = self._pending.pop(servable, None)
        if batch:
            task = asyncio.ensure_future(self._run(servable, batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, servable: Servable, batch: list[_PendingStep]) -> None:
        loop = asyncio.get_running_loop()
        h = np.concatenate([p.h for p in batch])
        c = np.concatenate([p.c for p in batch])
        try:
            probabilities, h, c = await loop.run_in_executor(
                self._executor, run_steps, servable, [p.values for p in batch], h, c
            )
        except Exception as exc:  # noqa: BLE001 - handed to every waiting request
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        for i, pending in enumerate(batch):
            if not pending.future.done():
                pending.future.set_result((probabilities[i], h[i : i + 1], c[i : i + 1]))

    def close(self) -> None:
        """Stop the worker thread."""
        self._executor.shutdown(wait=False, cancel_futures=True)
