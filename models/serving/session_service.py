"""The session data plane: create, step, reset and end per-session LSTM state.

A session is pinned to the model version it started on; its state lives in a ``SessionStore`` and is
advanced by the version's explicit-state step engine through the ``BatchScheduler``. One set of weights
therefore serves any number of sessions, and a retrained model never disturbs a live session.
"""

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from functools import partial

import anyio.to_thread
import numpy as np

from models.serving.batching import BatchScheduler, step_batch
from models.errors import SessionsUnsupported
from models.inputs import to_step_input
from models.serving.servable import Servable
from models.serving.session_store import SessionRecord, SessionStore, decode_state, encode_state, new_session_id
from models.serving.store import ModelStore

log = logging.getLogger(__name__)


class SessionService:
    """Session operations over a session store, the model store and the step batcher."""

    def __init__(
        self, store: SessionStore, models: ModelStore, batcher: BatchScheduler, *, default_ttl_s: int, max_sessions: int
    ) -> None:
        self.store = store
        self.models = models
        self.batcher = batcher
        self.default_ttl_s = default_ttl_s
        self.max_sessions = max_sessions

    async def create(
        self, model: str, ttl_s: int | None = None, version: int | None = None, session_id: str | None = None
    ) -> SessionRecord:
        """Start a session at the zero state on ``version`` (default: the latest) of ``model``.

        ``session_id`` is for protocols whose clients name their streams (Triton's ``sequence_id``);
        by default the id is new and unguessable.
        """
        servable = await self._servable(model, version)
        arch = servable.architecture
        if not arch.supports_sessions:
            raise SessionsUnsupported(
                f"'{arch.name}' is bidirectional: its backward pass needs the whole sequence, so it cannot "
                "be stepped one value at a time. Use /predict, or a unidirectional architecture for sessions.",
                model=model,
                architecture=arch.name,
            )
        ttl = ttl_s or self.default_ttl_s
        record = SessionRecord(
            session_id=session_id or new_session_id(),
            model=model,
            version=servable.meta.version,
            ttl_s=ttl,
            expires_at=time.time() + ttl,
        )
        await self.store.create(record, self.max_sessions)
        return record

    async def _servable(self, model: str, version: int | None) -> Servable:
        # Loading a version not yet in memory reads files: keep that off the event loop.
        return self.models.peek(model, version) or await anyio.to_thread.run_sync(self.models.get, model, version)

    async def get(self, session_id: str) -> SessionRecord:
        """The session's record."""
        return await self.store.get(session_id)

    async def step(self, session_id: str, values: Sequence[float]) -> tuple[SessionRecord, np.ndarray]:
        """Feed ``values`` in order; return the updated record and the probability after each value."""
        async with self.store.locked(session_id) as record:
            servable = await self._servable(record.model, record.version)
            x = to_step_input(values, input_kind=servable.architecture.input_kind, vocab_size=servable.params.vocab_size)
            h, c = decode_state(record.state, servable.params.units)
            probabilities, h, c = await self.batcher.submit(
                ("step", servable), (x, h, c), partial(step_batch, servable)
            )
            saved = await self.store.save(
                replace(record, steps_seen=record.steps_seen + len(x), state=encode_state(h, c))
            )
        return saved, probabilities

    async def reset(self, session_id: str) -> SessionRecord:
        """Back to the zero state with ``steps_seen`` 0."""
        async with self.store.locked(session_id) as record:
            return await self.store.save(replace(record, steps_seen=0, state=b""))

    async def delete(self, session_id: str) -> None:
        """End a session."""
        async with self.store.locked(session_id):
            await self.store.delete(session_id)

    async def reap_forever(self, interval_s: float) -> None:
        """Drop expired sessions every ``interval_s`` until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                reaped = await self.store.reap()
            except Exception:  # noqa: BLE001 - a failed sweep (e.g. Redis restarting) is retried next time
                log.exception("Session reaper failed")
                continue
            if reaped:
                log.info("Reaped %d expired session(s)", reaped)
