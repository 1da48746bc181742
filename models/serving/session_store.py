"""Session stores: where each session's LSTM state (h, c) lives between steps.

Two stores share one interface: ``MemorySessionStore`` (in-process, the embedded default) and
``RedisSessionStore`` (redis-py, so several replicas share sessions). Both serialize steps on one
session with a per-session lock, expire idle sessions (sliding TTL) and cap how many are live.
State travels as compact bytes: float32 ``h`` then ``c``; empty bytes mean the zero state.
"""

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import LockError

from models.errors import CapacityExceeded, SessionBusy, SessionNotFound


@dataclass(slots=True)
class SessionRecord:
    """One session: the model version it is pinned to, how far it got, and its recurrent state."""

    session_id: str
    model: str
    version: int
    ttl_s: int
    expires_at: float
    steps_seen: int = 0
    state: bytes = b""

    def touched(self, now: float) -> "SessionRecord":
        """The same session with its expiry moved ``ttl_s`` past ``now`` (sliding expiry)."""
        return replace(self, expires_at=now + self.ttl_s)


def encode_state(h: np.ndarray, c: np.ndarray) -> bytes:
    """``(1, units)`` h and c as float32 bytes."""
    return np.concatenate([h.reshape(-1), c.reshape(-1)]).astype(np.float32).tobytes()


def decode_state(state: bytes, units: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of ``encode_state``; empty bytes are the zero state."""
    if not state:
        zeros = np.zeros((1, units), np.float32)
        return zeros, zeros.copy()
    flat = np.frombuffer(state, dtype=np.float32)
    return flat[:units].reshape(1, units).copy(), flat[units:].reshape(1, units).copy()


def new_session_id() -> str:
    """128 random bits, URL-safe: unguessable."""
    return secrets.token_urlsafe(16)


def _not_found(session_id: str) -> SessionNotFound:
    return SessionNotFound(f"No live session '{session_id}' (unknown, deleted or expired).", session_id=session_id)


class SessionStore(Protocol):
    """Where sessions live. All methods raise ``SessionNotFound`` for unknown or expired ids."""

    async def create(self, record: SessionRecord, max_sessions: int) -> None:
        """Add a new session; ``CapacityExceeded`` when ``max_sessions`` are live."""
        ...

    async def get(self, session_id: str) -> SessionRecord:
        """Read a session without changing it."""
        ...

    def locked(self, session_id: str) -> "AsyncIterator[SessionRecord]":
        """Async context manager: hold the session's lock and yield its record."""
        ...

    async def save(self, record: SessionRecord) -> SessionRecord:
        """Write back a record read under ``locked``, its expiry refreshed; return what was written."""
        ...

    async def delete(self, session_id: str) -> None:
        """Remove a session."""
        ...

    async def reap(self) -> int:
        """Drop expired sessions; return how many."""
        ...

    async def count(self) -> int:
        """Live sessions."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class _KeyedLocks:
    """One asyncio lock per key, kept only while someone holds or waits for it (idle sessions cost nothing)."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        lock = lock or asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class MemorySessionStore:
    """Sessions in a dict of this process: the embedded default, nothing to run beside the service."""

    def __init__(self) -> None:
        self._records: dict[str, SessionRecord] = {}
        self._locks = _KeyedLocks()

    def _live(self, session_id: str, now: float) -> SessionRecord:
        record = self._records.get(session_id)
        if record is None or record.expires_at <= now:
            raise _not_found(session_id)
        return record

    async def create(self, record: SessionRecord, max_sessions: int) -> None:
        if len(self._records) >= max_sessions:
            await self.reap()
        if len(self._records) >= max_sessions:
            raise CapacityExceeded(f"{max_sessions} sessions are live; delete one or wait for expiry.", limit=max_sessions)
        self._records[record.session_id] = record

    async def get(self, session_id: str) -> SessionRecord:
        return self._live(session_id, time.time())

    @asynccontextmanager
    async def locked(self, session_id: str) -> AsyncIterator[SessionRecord]:
        async with self._locks.hold(session_id):
            yield self._live(session_id, time.time())

    async def save(self, record: SessionRecord) -> SessionRecord:
        if record.session_id not in self._records:
            raise _not_found(record.session_id)
        saved = self._records[record.session_id] = record.touched(time.time())
        return saved

    async def delete(self, session_id: str) -> None:
        self._live(session_id, time.time())
        del self._records[session_id]

    async def reap(self) -> int:
        now = time.time()
        expired = [sid for sid, record in self._records.items() if record.expires_at <= now]
        for sid in expired:
            del self._records[sid]
        return len(expired)

    async def count(self) -> int:
        return len(self._records)

    async def close(self) -> None:
        self._records.clear()


class RedisSessionStore:
    """Sessions in Redis: a hash per session with a Redis TTL, shared by every replica.

    A sorted set of session ids scored by expiry time counts live sessions for the cap; a Redis lock per
    session serializes steps across replicas, so two replicas never lose each other's update.
    """

    _FIELDS = ("model", "version", "ttl_s", "expires_at", "steps_seen", "state")

    def __init__(self, url: str, prefix: str, lock_timeout_s: float = 30.0, max_connections: int = 64) -> None:
        # A blocking pool makes a burst of requests queue for a connection instead of failing.
        pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=lock_timeout_s)
        self._redis = aioredis.Redis(connection_pool=pool)
        self._prefix = prefix
        self._index = f"{prefix}sessions"
        self._lock_timeout_s = lock_timeout_s

    def _key(self, session_id: str) -> str:
        return f"{self._prefix}session:{session_id}"

    async def _write(self, record: SessionRecord) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                self._key(record.session_id),
                mapping={
                    "model": record.model,
                    "version": record.version,
                    "ttl_s": record.ttl_s,
                    "expires_at": repr(record.expires_at),
                    "steps_seen": record.steps_seen,
                    "state": record.state,
                },
            )
            pipe.expireat(self._key(record.session_id), int(record.expires_at) + 1)
            pipe.zadd(self._index, {record.session_id: record.expires_at})
            await pipe.execute()

    async def create(self, record: SessionRecord, max_sessions: int) -> None:
        await self.reap()
        if await self.count() >= max_sessions:
            raise CapacityExceeded(f"{max_sessions} sessions are live; delete one or wait for expiry.", limit=max_sessions)
        await self._write(record)

    async def get(self, session_id: str) -> SessionRecord:
        values = await self._redis.hmget(self._key(session_id), self._FIELDS)
        if values[0] is None or float(values[3]) <= time.time():
            raise _not_found(session_id)
        model, version, ttl_s, expires_at, steps_seen, state = values
        return SessionRecord(
            session_id=session_id,
            model=model.decode(),
            version=int(version),
            ttl_s=int(ttl_s),
            expires_at=float(expires_at),
            steps_seen=int(steps_seen),
            state=state or b"",
        )

    @asynccontextmanager
    async def locked(self, session_id: str) -> AsyncIterator[SessionRecord]:
        lock = self._redis.lock(
            f"{self._prefix}lock:{session_id}", timeout=self._lock_timeout_s, blocking_timeout=self._lock_timeout_s
        )
        if not await lock.acquire():
            raise SessionBusy(f"Session '{session_id}' stayed locked by another step; retry.", session_id=session_id)
        try:
            yield await self.get(session_id)
        finally:
            try:
                await lock.release()
            except LockError:
                pass  # the lock timed out and expired on its own; nothing left to release

    async def save(self, record: SessionRecord) -> SessionRecord:
        if not await self._redis.exists(self._key(record.session_id)):
            raise _not_found(record.session_id)
        saved = record.touched(time.time())
        await self._write(saved)
        return saved

    async def delete(self, session_id: str) -> None:
        await self.get(session_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._key(session_id))
            pipe.zrem(self._index, session_id)
            await pipe.execute()

    async def reap(self) -> int:
        # Redis expires the hashes itself; only the index needs sweeping.
        return int(await self._redis.zremrangebyscore(self._index, "-inf", time.time()))

    async def count(self) -> int:
        return int(await self._redis.zcount(self._index, time.time(), "+inf"))

    async def close(self) -> None:
        await self._redis.aclose()


def open_session_store(url: str, prefix: str) -> SessionStore:
    """``memory`` or a ``redis://`` URL, as in the ``SESSION_STORE`` setting."""
    if url == "memory":
        return MemorySessionStore()
    return RedisSessionStore(url, prefix)
