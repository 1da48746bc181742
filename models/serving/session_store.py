"""Session stores: where each session's LSTM state (h, c) lives between steps.

Two stores share one interface: ``MemorySessionStore`` (in-process, the embedded default) and
``RedisSessionStore`` (so several replicas share sessions). Both serialize steps on one session with a
per-session lock held at most ``lock_wait_s`` by a waiter, expire idle sessions (sliding TTL) and cap how
many are live. State travels as compact bytes: float32 ``h`` then ``c``; empty bytes mean the zero state.
Each record also keeps its last applied step (a digest of its values and its probabilities as float32), so
a repeated step is answered again without being applied twice (``SessionRecord.replay``).
"""

import asyncio
import hashlib
import itertools
import logging
import math
import os
import secrets
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError, ResponseError

from models.errors import CapacityExceeded, SessionBusy, SessionNotFound, StateStoreUnavailable, StateUnknown

log = logging.getLogger(__name__)

#: Bytes of the fingerprint of a step's values kept in ``SessionRecord.last_step`` (64 bits: a repeat of the
#: last step and a different one with the same ``seq`` are told apart except with probability 2**-64).
DIGEST_BYTES = 8


@dataclass(slots=True, kw_only=True)
class SessionRecord:
    """One session: the model version (and incarnation) it is pinned to, how far it got, its recurrent
    state, and its last applied step (``DIGEST_BYTES`` of digest, then that step's probabilities as float32)."""

    session_id: str
    model: str
    version: int
    incarnation: str = ""
    ttl_s: int
    expires_at: float
    steps_seen: int = 0
    state: bytes = b""
    last_step: bytes = b""

    def touched(self, now: float) -> "SessionRecord":
        """The same session with its expiry moved ``ttl_s`` past ``now`` (sliding expiry)."""
        return self._but(expires_at=now + self.ttl_s)

    def stepped(self, state: bytes, digest: bytes, probabilities: np.ndarray) -> "SessionRecord":
        """The session after a step whose values had ``digest`` and answered ``probabilities`` (one row per value)."""
        return self._but(
            steps_seen=self.steps_seen + len(probabilities),
            state=state,
            last_step=digest + np.asarray(probabilities, np.float32).tobytes(),
        )

    def reset(self) -> "SessionRecord":
        """The session back at the zero state, as if new."""
        return self._but(steps_seen=0, state=b"", last_step=b"")

    def _but(
        self,
        *,
        expires_at: float | None = None,
        steps_seen: int | None = None,
        state: bytes | None = None,
        last_step: bytes | None = None,
    ) -> "SessionRecord":
        """This session with the given fields changed. ``dataclasses.replace`` reads every field by introspection:
        2.5x the time of this call, and every session step makes two copies (``stepped``, then ``touched``)."""
        return SessionRecord(
            session_id=self.session_id,
            model=self.model,
            version=self.version,
            incarnation=self.incarnation,
            ttl_s=self.ttl_s,
            expires_at=self.expires_at if expires_at is None else expires_at,
            steps_seen=self.steps_seen if steps_seen is None else steps_seen,
            state=self.state if state is None else state,
            last_step=self.last_step if last_step is None else last_step,
        )

    def replay(self, seq: int, digest: bytes, width: int = 1) -> np.ndarray | None:
        """The outputs ``(steps, width)`` of the last applied step if ``seq`` and ``digest`` repeat it, else ``None``."""
        if self.last_step[:DIGEST_BYTES] != digest:
            return None
        outputs = np.frombuffer(self.last_step, np.float32, offset=DIGEST_BYTES).reshape(-1, width)
        return outputs if seq == self.steps_seen - len(outputs) else None


def values_digest(values: Sequence[Any]) -> bytes:
    """A short fingerprint of a step's validated values (token ids, numbers or rows of features, as float64)."""
    return hashlib.blake2b(np.asarray(values, np.float64).tobytes(), digest_size=DIGEST_BYTES).digest()


def encode_state(h: np.ndarray, c: np.ndarray) -> bytes:
    """``(1, units)`` h and c as float32 bytes."""
    return h.astype(np.float32, copy=False).tobytes() + c.astype(np.float32, copy=False).tobytes()


def decode_state(state: bytes, units: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of ``encode_state``: read-only views of ``state``; empty bytes are the zero state (new arrays)."""
    if not state:
        zeros = np.zeros((1, units), np.float32)
        return zeros, zeros.copy()
    h, c = np.frombuffer(state, dtype=np.float32).reshape(2, 1, units)
    return h, c


def new_session_id() -> str:
    """128 random bits, URL-safe: unguessable."""
    return secrets.token_urlsafe(16)


def _not_found(session_id: str) -> SessionNotFound:
    return SessionNotFound(f"No live session '{session_id}' (unknown, deleted or expired).", session_id=session_id)


def _busy(session_id: str, wait_s: float) -> SessionBusy:
    return SessionBusy(
        f"Session '{session_id}' stayed locked by another step for {wait_s:g} s; retry.", session_id=session_id
    )


def _full(max_sessions: int) -> CapacityExceeded:
    return CapacityExceeded(f"{max_sessions} sessions are live; delete one or wait for expiry.", limit=max_sessions)


class SessionStore(Protocol):
    """Where sessions live. All methods raise ``SessionNotFound`` for unknown or expired ids, and
    ``StateStoreUnavailable`` when the store cannot be reached in time (then nothing was changed)."""

    async def create(self, record: SessionRecord, max_sessions: int) -> None:
        """Add a new session (at the record's state: zero, or a fork's or snapshot's); ``CapacityExceeded`` when
        ``max_sessions`` are live."""
        ...

    async def get(self, session_id: str) -> SessionRecord:
        """Read a session without changing it."""
        ...

    def locked(self, session_id: str) -> AbstractAsyncContextManager[SessionRecord]:
        """Async context manager: hold the session's lock and yield its record; ``SessionBusy`` when another
        step keeps it locked longer than the lock wait."""
        ...

    async def save(self, record: SessionRecord) -> SessionRecord:
        """Write back a record read under ``locked`` (releasing the lock), its expiry refreshed; return what was
        written. ``SessionBusy`` if the lock was lost meanwhile (nothing written); ``StateUnknown`` if the write
        was sent but its outcome is unknown."""
        ...

    async def delete(self, session_id: str) -> None:
        """Remove a session."""
        ...

    async def reap(self) -> int:
        """Drop expired sessions; return how many (each expired session is counted by one reap, on one replica)."""
        ...

    async def live_by_model(self) -> dict[str, int]:
        """How many sessions are live, by model name."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class _KeyedLocks:
    """One asyncio lock per key, kept only while someone holds or waits for it (idle sessions cost nothing)."""

    def __init__(self) -> None:
        #: key -> [its lock, how many hold or wait for it]
        self._locks: dict[str, list[Any]] = {}

    def hold(self, key: str, wait_s: float) -> "_Held":
        """Async context manager: hold ``key``'s lock; ``SessionBusy`` after waiting ``wait_s`` for it."""
        return _Held(self._locks, key, wait_s)


class _Held:
    """One hold of a ``_KeyedLocks`` key. Written out rather than an ``@asynccontextmanager``: every session
    step enters one, and the generator machinery cost more than the locking itself."""

    __slots__ = ("_locks", "_key", "_wait_s", "_entry")

    def __init__(self, locks: dict[str, list[Any]], key: str, wait_s: float) -> None:
        self._locks = locks
        self._key = key
        self._wait_s = wait_s

    async def __aenter__(self) -> None:
        entry = self._entry = self._locks.setdefault(self._key, [None, 0])
        lock = entry[0] = entry[0] or asyncio.Lock()
        entry[1] += 1
        try:
            if lock.locked():
                async with asyncio.timeout(self._wait_s):
                    await lock.acquire()
            else:
                await lock.acquire()
        except TimeoutError:
            self._leave()
            raise _busy(self._key, self._wait_s) from None
        except BaseException:
            self._leave()
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        self._entry[0].release()
        self._leave()

    def _leave(self) -> None:
        self._entry[1] -= 1
        if not self._entry[1]:
            del self._locks[self._key]


class _LockedRecord:
    """A record read under a held lock (an async context manager; written out for the same reason as ``_Held``)."""

    __slots__ = ("_held", "_read")

    def __init__(self, held: _Held, read: Callable[[], SessionRecord]) -> None:
        self._held = held
        self._read = read

    async def __aenter__(self) -> SessionRecord:
        await self._held.__aenter__()
        try:
            return self._read()
        except BaseException:
            await self._held.__aexit__()
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        await self._held.__aexit__()


#: A session as ``MemorySessionStore`` keeps it: ``(expires_at, steps_seen, ttl_s, pin, data)``. ``pin`` is the
#: ``(model, version, incarnation)`` tuple shared by every session on that version; ``data`` is the state's
#: length (4 bytes, little-endian), the state, then the last step, or ``b""`` for a session never stepped.
#: A flat tuple of immutable values, not a ``SessionRecord``: no per-session object with its own fields, and the
#: garbage collector stops tracking it after its first pass (it holds no container that could form a cycle),
#: so full collections do not grow with the number of sessions (bench/sessions_memory.py: README, Performance).
_Stored = tuple[float, int, int, tuple[str, int, str], bytes]

#: Sessions the memory store's reaper checks between two turns of the event loop (about 2 ms of work).
_REAP_SLICE = 10_000


class MemorySessionStore:
    """Sessions in a dict of this process: the embedded default, nothing to run beside the service."""

    def __init__(self, lock_wait_s: float = 5.0) -> None:
        self._records: dict[str, _Stored] = {}
        #: Every pin in use, so sessions on one version share one tuple (and its strings).
        self._pins: dict[tuple[str, int, str], tuple[str, int, str]] = {}
        self._locks = _KeyedLocks()
        self._lock_wait_s = lock_wait_s

    def _pack(self, record: SessionRecord) -> _Stored:
        pin = (record.model, record.version, record.incarnation)
        pin = self._pins.setdefault(pin, pin)
        data = b""
        if record.state or record.last_step:
            data = len(record.state).to_bytes(4, "little") + record.state + record.last_step
        return record.expires_at, record.steps_seen, record.ttl_s, pin, data

    def _live(self, session_id: str, now: float) -> SessionRecord:
        stored = self._records.get(session_id)
        if stored is None or stored[0] <= now:
            raise _not_found(session_id)
        expires_at, steps_seen, ttl_s, (model, version, incarnation), data = stored
        split = 4 + int.from_bytes(data[:4], "little") if data else 0
        return SessionRecord(
            session_id=session_id,
            model=model,
            version=version,
            incarnation=incarnation,
            ttl_s=ttl_s,
            expires_at=expires_at,
            steps_seen=steps_seen,
            state=data[4:split],
            last_step=data[split:],
        )

    async def create(self, record: SessionRecord, max_sessions: int) -> None:
        # Expired records are counted out, not removed: the reaper removes them and counts them as expired.
        if len(self._records) >= max_sessions and sum(self._live_models(time.time()).values()) >= max_sessions:
            raise _full(max_sessions)
        self._records[record.session_id] = self._pack(record)

    async def get(self, session_id: str) -> SessionRecord:
        return self._live(session_id, time.time())

    def locked(self, session_id: str) -> "_LockedRecord":
        return _LockedRecord(self._locks.hold(session_id, self._lock_wait_s), lambda: self._live(session_id, time.time()))

    async def save(self, record: SessionRecord) -> SessionRecord:
        if record.session_id not in self._records:
            raise _not_found(record.session_id)
        saved = record.touched(time.time())
        self._records[record.session_id] = self._pack(saved)
        return saved

    async def delete(self, session_id: str) -> None:
        self._live(session_id, time.time())
        del self._records[session_id]

    async def reap(self) -> int:
        # One pass over a million sessions takes about 0.2 s: done in slices, requests are served in between.
        now = time.time()
        records = self._records
        ids = list(records)
        reaped = 0
        for start in range(0, len(ids), _REAP_SLICE):
            expired = [
                sid for sid in ids[start : start + _REAP_SLICE] if (stored := records.get(sid)) and stored[0] <= now
            ]
            for sid in expired:
                del records[sid]
            reaped += len(expired)
            await asyncio.sleep(0)
        return reaped

    async def live_by_model(self) -> dict[str, int]:
        return dict(self._live_models(time.time()))

    def _live_models(self, now: float) -> Counter[str]:
        # A stored session is (expires_at, steps_seen, ttl_s, (model, version, incarnation), data).
        return Counter(stored[3][0] for stored in self._records.values() if stored[0] > now)

    async def close(self) -> None:
        self._records.clear()
        self._pins.clear()


# --------------------------------------------------------------------------------------------------
# Redis: every operation on a session is one Lua script, so each is atomic on the server.
# Session hash fields, in the order _RECORD reads them:
_FIELDS = ("model", "version", "incarnation", "ttl_s", "expires_at", "steps_seen", "state", "last")
_HMGET = "redis.call('HMGET', KEYS[1], " + ", ".join(f"'{f}'" for f in _FIELDS) + ")"

#: KEYS session, lock; ARGV token, lock ttl ms, now. The record, or 0 when another step holds the lock, or
#: nil when the session is not live. The lock is taken (or kept, if this token already holds it: a retry
#: after a lost reply) only for a live session.
LOCK_AND_READ = f"""
local r = {_HMGET}
if not r[1] or tonumber(r[5]) <= tonumber(ARGV[3]) then return nil end
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return r
"""

#: KEYS session, lock, index, model index; ARGV token, session id, expires_at, expiry ms, steps_seen, state, last.
#: 1 written (and the lock released), 0 the lock is no longer this token's (nothing written), -1 the session
#: was deleted meanwhile. The fence: the state is written only in the same script that checks the token.
SAVE_AND_UNLOCK = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2])
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
redis.call('HSET', KEYS[1], 'expires_at', ARGV[3], 'steps_seen', ARGV[5], 'state', ARGV[6], 'last', ARGV[7])
redis.call('PEXPIREAT', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[2])
return 1
"""

#: KEYS lock; ARGV token, lock ttl ms (0: release). 1 if the token still held the lock.
RENEW_OR_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) else redis.call('DEL', KEYS[1]) end
return 1
"""

#: KEYS session, index, model index, models; ARGV now, max sessions, session id, expires_at, expiry ms, model,
#: version, incarnation, ttl_s, steps_seen, state (a fork or a restored snapshot starts past zero). Count the
#: live ids and create: one script, so replicas creating at once never exceed the cap together. Expired ids are
#: left to the reaper (REAP), which counts them. 1 created, 0 full.
CREATE_CAPPED = """
if redis.call('ZCOUNT', KEYS[2], '(' .. ARGV[1], '+inf') >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'model', ARGV[6], 'version', ARGV[7], 'incarnation', ARGV[8], 'ttl_s', ARGV[9],
  'expires_at', ARGV[4], 'steps_seen', ARGV[10], 'state', ARGV[11], 'last', '')
redis.call('PEXPIREAT', KEYS[1], ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
redis.call('SADD', KEYS[4], ARGV[6])
return 1
"""

#: KEYS session, index; ARGV session id, now, prefix of the model indexes. 1 deleted, 0 not live.
DELETE = """
local expires_at = redis.call('HGET', KEYS[1], 'expires_at')
local model = redis.call('HGET', KEYS[1], 'model')
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if model then redis.call('ZREM', ARGV[3] .. model, ARGV[1]) end
if not expires_at or tonumber(expires_at) <= tonumber(ARGV[2]) then return 0 end
return 1
"""

#: KEYS session; ARGV now. The record, or nil when not live.
READ = f"""
local r = {_HMGET}
if not r[1] or tonumber(r[5]) <= tonumber(ARGV[1]) then return nil end
return r
"""

#: KEYS index, models; ARGV now, prefix of the model indexes. Sweep expired ids from the index and each model's
#: index (dropping models with none left); the number swept from the index.
REAP = """
local swept = redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
for _, model in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  redis.call('ZREMRANGEBYSCORE', ARGV[2] .. model, '-inf', ARGV[1])
  if redis.call('EXISTS', ARGV[2] .. model) == 0 then redis.call('SREM', KEYS[2], model) end
end
return swept
"""

#: KEYS models; ARGV now, prefix of the model indexes. A flat list: model, live count, model, live count...
LIVE_BY_MODEL = """
local counts = {}
for _, model in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  counts[#counts + 1] = model
  counts[#counts + 1] = redis.call('ZCOUNT', ARGV[2] .. model, '(' .. ARGV[1], '+inf')
end
return counts
"""

_SCRIPTS = {script: hashlib.sha1(script.encode()).hexdigest() for script in
            (LOCK_AND_READ, SAVE_AND_UNLOCK, RENEW_OR_RELEASE, CREATE_CAPPED, DELETE, READ, REAP, LIVE_BY_MODEL)}


class _NotSent(Exception):
    """A Redis call failed before any byte of it was written: it cannot have run."""


@dataclass(slots=True)
class _Batch:
    """The commands of one pipeline, and whether any of them may have reached Redis."""

    commands: list[tuple[Any, ...]]
    written: bool = False


class _Pipeliner:
    """Sends the commands made during one turn of the event loop as one pipeline, under one deadline.

    Steps of many sessions reach the store together (the requests read from the sockets in one turn start
    together, and the batcher resolves a whole batch at once), so their locks and their saves each leave
    in one write and one round trip instead of one each. It drives redis-py connections directly, without
    the client's pool and pipeline objects: their bookkeeping cost about three times the CPU of a bare
    asyncio round trip (measured with PING).
    Scripts are called by SHA; a Redis that lost its script cache (restarted) answers NOSCRIPT without
    running anything, so those calls are loaded and sent again. Any other failure fails every call of the
    pipeline and nothing is resent, since a resent save might apply twice.
    """

    def __init__(self, url: str, deadline_s: float, max_connections: int) -> None:
        self._connections = aioredis.ConnectionPool.from_url(
            url,
            # No per-operation socket timeout: the one deadline below covers waiting for a connection,
            # connecting, sending and every reply (a per-operation timeout also costs a task per send).
            socket_timeout=None,
            socket_connect_timeout=deadline_s,
            # Never resend on its own: a resent save whose first reply was lost could apply twice.
            retry=Retry(NoBackoff(), 0),
            # RESP2 and no CLIENT SETINFO: connecting is one round trip, not four (HELLO, two SETINFO and
            # maintenance notifications), which matters when Redis comes back and every connection reconnects.
            protocol=2,
            driver_info=None,
        )
        self._deadline_s = deadline_s
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[AbstractConnection] = []
        self._queue: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self._sending: set[asyncio.Task[None]] = set()
        self._direct = 0

    async def call(self, *command: Any) -> Any:
        """Send one command; its reply, or the ``RedisError``/``TimeoutError`` it failed with (``_NotSent`` if
        it failed before any of its pipeline was written: then it cannot have run)."""
        if not self._queue and not self._sending and not self._direct:
            # Nothing in flight: nothing to join either, so send it at once from this task (one loop turn and one
            # task fewer: at one connection that was a tenth of a step's time).
            self._direct += 1
            try:
                (reply,) = await self._run([command])
            finally:
                self._direct -= 1
            if isinstance(reply, Exception):
                raise reply
            return reply
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((command, future))
        if len(self._queue) == 1:
            # A task's first step runs after every callback already due in this turn of the loop: by then the
            # queue holds every command made in this turn.
            task = asyncio.ensure_future(self._send())
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        return await future

    async def _send(self) -> None:
        commands = [command for command, _ in self._queue]
        futures = [future for _, future in self._queue]
        self._queue = []
        try:
            replies = await self._run(commands)
        except Exception as exc:  # noqa: BLE001 - handed to every caller of the pipeline
            for future in futures:
                if not future.done():
                    future.set_exception(exc)
            return
        for future, reply in zip(futures, replies, strict=True):
            if not future.done():
                if isinstance(reply, Exception):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)

    async def _run(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """The replies of ``commands`` (error replies as exceptions, in place), or the pipeline's failure."""
        batch = _Batch(commands)
        try:
            async with asyncio.timeout(self._deadline_s):
                return await self._execute(batch)
        except Exception as exc:
            if batch.written:
                raise
            raise _NotSent("Nothing was written to Redis.") from exc

    async def _execute(self, batch: "_Batch") -> list[Any]:
        replies = await self._exchange(batch, batch.commands)
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            await self._exchange(batch, [("SCRIPT", "LOAD", script) for script in _SCRIPTS])
            for i, reply in zip(missing, await self._exchange(batch, [batch.commands[i] for i in missing]), strict=True):
                replies[i] = reply
        return replies

    async def _exchange(self, batch: "_Batch", commands: list[tuple[Any, ...]]) -> list[Any]:
        """Write ``commands`` at once on one connection and read their replies (error replies as values)."""
        async with self._slots:
            connection = self._idle.pop() if self._idle else self._connections.make_connection()
            try:
                if connection.is_connected and await connection.can_read():
                    await connection.disconnect()  # closed by the server (e.g. it restarted) or holding stray bytes
                if not connection.is_connected:
                    await connection.connect()
                batch.written = True
                await connection.send_packed_command(connection.pack_commands(commands), check_health=False)
                replies: list[Any] = []
                for _ in commands:
                    try:
                        replies.append(await connection.read_response())
                    except ResponseError as exc:
                        replies.append(exc)
                return replies
            except BaseException:
                # A deadline, a cancellation or a broken socket: this connection may still receive a late reply,
                # so it is closed (and reconnects on its next use), never read from again.
                await connection.disconnect(nowait=True)
                raise
            finally:
                self._idle.append(connection)

    async def close(self) -> None:
        for task in list(self._sending):
            task.cancel()
        for connection in self._idle:
            await connection.disconnect()
        self._idle.clear()


class RedisSessionStore:
    """Sessions in Redis: a hash per session with a Redis TTL, shared by every replica.

    A sorted set of session ids scored by expiry time counts live sessions for the cap (swept, counted and
    added in one script). Steps on one session are serialized by a fenced lock: ``locked`` takes
    ``lock:<id>`` with a random token and reads the record in one script; ``save`` writes the new state only
    if that key still holds the token and deletes it, in one script. A step that outlived its lock (a frozen
    or slow replica) therefore writes nothing (``SessionBusy``), and no update is lost. Locks expire after
    ``lock_ttl_s`` (a killed or frozen replica blocks its sessions that long at most) and are renewed while
    their step runs. Within one process, steps on one session queue on an asyncio lock first, so only
    other replicas' steps make a waiter poll Redis.

    Every call has a deadline (``timeout_s``: waiting for a connection, connecting, sending, the reply). A call that misses it or
    cannot connect raises ``StateStoreUnavailable`` (nothing changed) or, for a save already sent,
    ``StateUnknown``; a connection whose reply is late is closed, never read again, and nothing is resent.
    """

    def __init__(
        self,
        url: str,
        prefix: str,
        *,
        lock_ttl_s: float = 4.0,
        lock_wait_s: float = 5.0,
        timeout_s: float = 0.8,
        max_connections: int = 16,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self._pipeliner = _Pipeliner(url, timeout_s, max_connections)
        #: Told the code of each failed call (``state_store_unavailable``, ``state_unknown``): the metrics count them.
        self._on_error = on_error or (lambda code: None)
        self._prefix = prefix
        self._index = f"{prefix}sessions"
        # Per model: the ids of its sessions scored by expiry (live sessions by model), and the set of their names.
        self._model_index_prefix = f"{prefix}sessions-of:"
        self._models = f"{prefix}session-models"
        self._lock_ttl_ms = max(1, round(lock_ttl_s * 1000))
        self._lock_wait_s = lock_wait_s
        self._local = _KeyedLocks()
        #: Session id -> token of each lock this process holds (the renewer keeps them alive).
        self._held: dict[str, str] = {}
        # Says which process holds a lock (pid and host, for whoever inspects Redis), and is unique to it.
        self._owner = f"{os.getpid()}-{socket.gethostname()}-{secrets.token_hex(4)}"
        self._tokens = itertools.count()
        self._renewer: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()

    def _key(self, session_id: str) -> str:
        return f"{self._prefix}session:{session_id}"

    def _lock_key(self, session_id: str) -> str:
        return f"{self._prefix}lock:{session_id}"

    async def _script(
        self, session_id: str | None, script: str, keys: Sequence[str], args: Sequence[Any], *, if_lost: str | None = None
    ) -> Any:
        """Run one of the scripts above on the keys of ``session_id`` (``None``: a session not yet created).
        ``if_lost``: the script changes the session, and this tells the client what to do if its reply is lost."""
        command = ("EVALSHA", _SCRIPTS[script], len(keys), *keys, *args)
        details = {"session_id": session_id} if session_id else {}
        return await self._call(*command, details=details, if_lost=if_lost)

    async def _call(self, *command: Any, details: dict[str, Any] | None = None, if_lost: str | None = None) -> Any:
        """Send a command; a store that cannot answer in time becomes a domain error (with ``details``)."""
        try:
            return await self._pipeliner.call(*command)
        except (RedisError, TimeoutError, OSError, _NotSent) as exc:
            if isinstance(exc, ResponseError):
                raise  # a script error is a bug: let it surface as one
            log.warning("Session store call failed: %r", exc.__cause__ if isinstance(exc, _NotSent) else exc)
            if if_lost and not isinstance(exc, _NotSent):
                self._on_error(StateUnknown.code)
                raise StateUnknown(
                    "The change was sent to the session store (Redis), which did not confirm it in time: it may or "
                    f"may not be applied. {if_lost}",
                    **(details or {}),
                ) from exc
            self._on_error(StateStoreUnavailable.code)
            raise StateStoreUnavailable(
                "The session store (Redis) did not answer in time; nothing was changed. Retry shortly.", **(details or {})
            ) from exc

    def _record(self, session_id: str, values: list[bytes | None]) -> SessionRecord:
        model, version, incarnation, ttl_s, expires_at, steps_seen, state, last = values
        return SessionRecord(
            session_id=session_id,
            model=model.decode(),  # type: ignore[union-attr]  # the scripts return only live records
            version=int(version),  # type: ignore[arg-type]
            incarnation=(incarnation or b"").decode(),
            ttl_s=int(ttl_s),  # type: ignore[arg-type]
            expires_at=float(expires_at),  # type: ignore[arg-type]
            steps_seen=int(steps_seen),  # type: ignore[arg-type]
            state=state or b"",
            last_step=last or b"",
        )

    async def create(self, record: SessionRecord, max_sessions: int) -> None:
        created = await self._script(
            None,
            CREATE_CAPPED,
            (self._key(record.session_id), self._index, self._model_index_prefix + record.model, self._models),
            (repr(time.time()), max_sessions, record.session_id, repr(record.expires_at),
             _expiry_ms(record.expires_at), record.model, record.version, record.incarnation, record.ttl_s,
             record.steps_seen, record.state),
            if_lost="If it was, that session (whose id you did not get) expires unused after its ttl_s; start another.",
        )
        if not created:
            raise _full(max_sessions)

    async def get(self, session_id: str) -> SessionRecord:
        values = await self._script(session_id, READ, (self._key(session_id),), (repr(time.time()),))
        if values is None:
            raise _not_found(session_id)
        return self._record(session_id, values)

    @asynccontextmanager
    async def locked(self, session_id: str) -> AsyncIterator[SessionRecord]:
        deadline = time.monotonic() + self._lock_wait_s
        async with self._local.hold(session_id, self._lock_wait_s):
            token = f"{self._owner}:{next(self._tokens)}"
            record = await self._acquire(session_id, token, deadline)
            self._held[session_id] = token
            self._keep_locks_alive()
            try:
                yield record
            finally:
                if self._held.pop(session_id, None) is not None:  # not released by a save
                    await self._release(session_id, token)

    async def _acquire(self, session_id: str, token: str, deadline: float) -> SessionRecord:
        keys = (self._key(session_id), self._lock_key(session_id))
        pause = 0.001
        while True:
            try:
                values = await self._script(session_id, LOCK_AND_READ, keys, (token, self._lock_ttl_ms, repr(time.time())))
            except StateStoreUnavailable:
                # The script may have run with its reply lost: free the lock if Redis lets us, else it
                # expires after lock_ttl_s.
                self._spawn(self._release(session_id, token))
                raise
            if values is None:
                raise _not_found(session_id)
            if values != 0:
                return self._record(session_id, values)
            if time.monotonic() + pause > deadline:
                raise _busy(session_id, self._lock_wait_s)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.05)

    async def save(self, record: SessionRecord) -> SessionRecord:
        token = self._held.pop(record.session_id)
        saved = record.touched(time.time())
        written = await self._script(
            record.session_id,
            SAVE_AND_UNLOCK,
            (self._key(record.session_id), self._lock_key(record.session_id), self._index,
             self._model_index_prefix + record.model),
            (token, record.session_id, repr(saved.expires_at), _expiry_ms(saved.expires_at), saved.steps_seen,
             saved.state, saved.last_step),
            if_lost="Read the session, or retry with 'seq'.",
        )
        if written == 0:
            raise SessionBusy(
                f"This step on session '{record.session_id}' outlived its lock (another step may have run since); "
                "nothing was written. Read the session and retry.",
                session_id=record.session_id,
            )
        if written == -1:
            raise _not_found(record.session_id)
        return saved

    async def _release(self, session_id: str, token: str) -> None:
        try:
            await self._script(session_id, RENEW_OR_RELEASE, (self._lock_key(session_id),), (token, 0))
        except StateStoreUnavailable:
            pass  # the lock expires after lock_ttl_s on its own

    def _keep_locks_alive(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.ensure_future(self._renew_forever())

    async def _renew_forever(self) -> None:
        """Every third of the lock TTL, extend every lock this process holds: one pipeline for all."""
        while True:
            await asyncio.sleep(self._lock_ttl_ms / 3000)
            held = list(self._held.items())
            renewals = [
                self._script(session_id, RENEW_OR_RELEASE, (self._lock_key(session_id),), (token, self._lock_ttl_ms))
                for session_id, token in held
            ]
            outcomes = await asyncio.gather(*renewals, return_exceptions=True)
            for (session_id, token), outcome in zip(held, outcomes, strict=True):
                # A lock released or re-taken while its renewal was on the way is no loss.
                if outcome != 1 and self._held.get(session_id) == token:
                    log.warning("Could not renew the lock of session %s: %r", session_id, outcome)

    def _spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def delete(self, session_id: str) -> None:
        deleted = await self._script(
            session_id, DELETE, (self._key(session_id), self._index),
            (session_id, repr(time.time()), self._model_index_prefix),
            if_lost="Read the session to see whether it is gone, or delete it again.",
        )
        if not deleted:
            raise _not_found(session_id)

    async def reap(self) -> int:
        # Redis expires the hashes itself; only the indexes need sweeping.
        return int(await self._script(None, REAP, (self._index, self._models), (repr(time.time()), self._model_index_prefix)))

    async def live_by_model(self) -> dict[str, int]:
        flat = await self._script(None, LIVE_BY_MODEL, (self._models,), (repr(time.time()), self._model_index_prefix))
        return {flat[i].decode(): int(flat[i + 1]) for i in range(0, len(flat), 2) if int(flat[i + 1])}

    async def close(self) -> None:
        for task in [self._renewer, *self._background]:
            if task is not None:
                task.cancel()
        await self._pipeliner.close()


def _expiry_ms(expires_at: float) -> int:
    """When Redis drops the hash: just after the session's logical expiry (which readers check first)."""
    return math.ceil(expires_at * 1000) + 1000


def open_session_store(
    url: str,
    prefix: str,
    *,
    lock_ttl_s: float,
    lock_wait_s: float,
    timeout_s: float,
    on_error: Callable[[str], None] | None = None,
) -> SessionStore:
    """``memory`` or a ``redis://`` URL, as in the ``SESSION_STORE`` setting; ``on_error`` is told the code of
    each store call that failed (Redis only: the memory store cannot fail)."""
    if url == "memory":
        return MemorySessionStore(lock_wait_s)
    return RedisSessionStore(
        url, prefix, lock_ttl_s=lock_ttl_s, lock_wait_s=lock_wait_s, timeout_s=timeout_s, on_error=on_error
    )
