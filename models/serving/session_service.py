"""The session data plane: create, step, reset and end per-session LSTM state.

A session is pinned to the model version (and incarnation) it started on; its state lives in a
``SessionStore`` and is advanced by the version's explicit-state step engine through the
``BatchScheduler``. One set of weights therefore serves any number of sessions, a retrained model never
disturbs a live session, and a deleted model (even if recreated under the same name) ends them.

Steps are exactly-once with ``seq`` (the number of steps the session had seen before the values): the
next ``seq`` applies, a repeat of the last applied step answers its stored probabilities again and applies
nothing, anything else is ``StepOutOfOrder``. The check and the save happen under the session's lock.

A session's position can be read out (``state``: a ``SessionState``), and a new session started from one:
``fork`` (at another live session's state) or ``restore`` (a snapshot taken here or on another deployment of
the same model incarnation and version). The state is the float32 ``h`` and ``c`` the step engine uses, so a
fork or a restored session continues exactly as the original would.
"""

import asyncio
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import numpy as np

from models.errors import (
    InvalidInput,
    ModelDeleted,
    ModelNotFound,
    SessionsUnsupported,
    StateMismatch,
    StepOutOfOrder,
    Unavailable,
    VersionNotFound,
)
from models.inputs import to_step_input
from models.serving.batching import BatchScheduler, step_batch
from models.serving.session_store import (
    SessionRecord,
    SessionStore,
    decode_state,
    encode_state,
    new_session_id,
    values_digest,
)
from models.serving.registry import ModelRegistry
from models.serving.servable import Servable

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Stepped:
    """The outcome of a step: the session after it, the model's output after each value (``(steps,
    output_width)``: the probability of a binary model), its task, and whether this was a repeat of the last
    applied step answered again (nothing applied)."""

    record: SessionRecord
    probabilities: np.ndarray
    replayed: bool
    task: str = "binary"


@dataclass(frozen=True, slots=True)
class SessionState:
    """Where a session is: the model version (and incarnation) it runs on, how many steps it has seen, and its
    LSTM state ``h`` and ``c`` (float32, shape ``(1, units)``)."""

    model: str
    incarnation: str
    version: int
    steps_seen: int
    h: np.ndarray
    c: np.ndarray


class SessionEvents:
    """What the service tells its observer (the metrics): sessions created, deleted and expired, lock waits.
    This base class ignores them all."""

    def created(self, model: str) -> None:
        """A session of ``model`` started (new, fork or restore)."""

    def deleted(self) -> None:
        """A session was deleted."""

    def expired(self, count: int) -> None:
        """The reaper found ``count`` sessions expired."""

    def lock_waited(self, seconds: float) -> None:
        """A step or reset waited ``seconds`` for its session's lock (and record)."""


class SessionService:
    """Session operations over a session store, the model registry and the step batcher."""

    def __init__(
        self,
        store: SessionStore,
        models: ModelRegistry,
        batcher: BatchScheduler,
        *,
        default_ttl_s: int,
        max_sessions: int,
        events: SessionEvents | None = None,
    ) -> None:
        self.events = events or SessionEvents()
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
        return await self._start(await self.models.servable(model, version), ttl_s, session_id)

    async def _start(
        self, servable: Servable, ttl_s: int | None, session_id: str | None, steps_seen: int = 0, state: bytes = b""
    ) -> SessionRecord:
        """A new session on ``servable``'s version, at ``state`` after ``steps_seen`` steps (default: zero)."""
        model = servable.meta.name
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
            incarnation=servable.meta.incarnation,
            ttl_s=ttl,
            expires_at=time.time() + ttl,
            steps_seen=steps_seen,
            state=state,
        )
        await self.store.create(record, self.max_sessions)
        self.events.created(model)
        return record

    async def state(self, session_id: str) -> SessionState:
        """The session's position and LSTM state (a consistent read: one save writes them together)."""
        record = await self.store.get(session_id)
        with _pinned(record):
            servable = await self.models.servable(record.model, record.version, record.incarnation)
        h, c = decode_state(record.state, servable.params.units)
        return SessionState(record.model, servable.meta.incarnation, record.version, record.steps_seen, h, c)

    async def fork(self, model: str, session_id: str, ttl_s: int | None = None) -> SessionRecord:
        """A new session of ``model`` at session ``session_id``'s current state; the original is untouched."""
        return await self.restore(model, await self.state(session_id), ttl_s)

    async def restore(self, model: str, state: SessionState, ttl_s: int | None = None) -> SessionRecord:
        """A new session of ``model`` at ``state``: ``StateMismatch`` unless the state is of this model's
        incarnation and one of its versions, ``InvalidInput`` unless h and c are finite and of its shape."""
        if state.model != model:
            raise _mismatch(f"The state is of model '{state.model}', not '{model}'.", "model", model, state.model)
        try:
            servable = await self.models.servable(model, state.version)
        except VersionNotFound:
            raise _mismatch(
                f"Model '{model}' has no version {state.version} here (the state's version).",
                "version", self.models.index.meta(model).version, state.version,
            ) from None
        if state.incarnation != servable.meta.incarnation:
            raise _mismatch(
                f"The state is of another incarnation of model '{model}' (deleted since, or trained separately "
                "under the same name): its weights are not this model's.",
                "incarnation", servable.meta.incarnation, state.incarnation,
            )
        units = servable.params.units
        for name, array in (("h", state.h), ("c", state.c)):
            if array.shape != (1, units):
                raise InvalidInput(
                    f"state.{name} must be one row of {units} numbers (the model's units).",
                    field=f"state.{name}", expected=f"shape [1, {units}]", got=f"shape {list(array.shape)}",
                )
            if not np.isfinite(array).all():
                raise InvalidInput(f"state.{name} holds a value that is not finite in float32.",
                                   field=f"state.{name}", expected="finite float32 numbers", got="inf or NaN")
        return await self._start(servable, ttl_s, None, state.steps_seen, encode_state(state.h, state.c))

    async def get(self, session_id: str) -> SessionRecord:
        """The session's record."""
        return await self.store.get(session_id)

    async def step(self, session_id: str, values: Sequence[float], seq: int | None = None) -> Stepped:
        """Feed ``values`` in order (as step ``seq`` when given); the session after it and each probability."""
        waiting = time.perf_counter()
        async with self.store.locked(session_id) as record:
            self.events.lock_waited(time.perf_counter() - waiting)
            with _pinned(record):
                servable = await self.models.servable(record.model, record.version, record.incarnation)
            params = servable.params
            x = to_step_input(
                values, input_kind=servable.architecture.input_kind, vocab_size=params.vocab_size, n_features=params.n_features
            )
            # After validation: the values are then rows of equal width, which the digest reads as one array.
            digest = values_digest(values)
            if seq is not None and seq != record.steps_seen:
                replayed = record.replay(seq, digest, params.output_width)
                if replayed is None:
                    raise StepOutOfOrder(
                        f"Session '{session_id}' has seen {record.steps_seen} steps, so the next step is seq "
                        f"{record.steps_seen}; seq {seq} is neither that nor a repeat of the last applied step "
                        "(same seq, same values). Read the session to see where it is.",
                        session_id=session_id,
                        field="seq",
                        expected=record.steps_seen,
                        got=seq,
                    )
                return Stepped(record, replayed, replayed=True, task=params.task)
            h, c = decode_state(record.state, servable.params.units)
            # Each value is one engine call, about the cost of one sequence's predict call: count max_len each.
            probabilities, h, c = await self.batcher.submit(
                ("step", servable), (x, h, c), partial(step_batch, servable), cost=len(x) * servable.params.max_len
            )
            saved = await self.store.save(record.stepped(encode_state(h, c), digest, probabilities))
        return Stepped(saved, probabilities, replayed=False, task=params.task)

    async def live_by_model(self) -> dict[str, int]:
        """Live sessions by model name (of every replica, when the store is shared)."""
        return await self.store.live_by_model()

    async def reset(self, session_id: str) -> SessionRecord:
        """Back to the zero state with ``steps_seen`` 0."""
        async with self.store.locked(session_id) as record:
            with _pinned(record):
                self.models.index.meta(record.model, record.version, record.incarnation)
            return await self.store.save(record.reset())

    async def delete(self, session_id: str) -> None:
        """End a session (a step in flight on it then finds it gone and writes nothing)."""
        await self.store.delete(session_id)
        self.events.deleted()

    async def reap_forever(self, interval_s: float) -> None:
        """Drop expired sessions every ``interval_s`` until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                reaped = await self.store.reap()
            except Unavailable as exc:  # e.g. Redis restarting: the next sweep catches up
                log.warning("Session reaper skipped a sweep: %s", exc.message)
                continue
            except Exception:  # noqa: BLE001 - a failed sweep is retried next time
                log.exception("Session reaper failed")
                continue
            if reaped:
                self.events.expired(reaped)
                log.info("Reaped %d expired session(s)", reaped)


def _mismatch(message: str, field: str, expected: object, got: object) -> StateMismatch:
    return StateMismatch(message, field=field, expected=expected, got=got)


def _deleted(record: SessionRecord) -> ModelDeleted:
    return ModelDeleted(
        f"Model '{record.model}' was deleted after session '{record.session_id}' started on its version "
        f"{record.version}; the session has ended (a model now of that name is another model). Start a new session.",
        session_id=record.session_id,
        model=record.model,
        version=record.version,
    )


@contextmanager
def _pinned(record: SessionRecord) -> Iterator[None]:
    """Looking up the version (and incarnation) a session is pinned to: a model, version or incarnation gone
    means the model was deleted. Records written before incarnations existed carry "": nothing to compare."""
    try:
        yield
    except (ModelNotFound, VersionNotFound):
        raise _deleted(record) from None
