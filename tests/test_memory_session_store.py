"""The in-memory session store's compact layout: records come back exactly as saved, and expiry still holds."""

import asyncio
import gc
import time
from dataclasses import fields, replace

import numpy as np
import pytest

from models.errors import SessionBusy, SessionNotFound
from models.serving import session_store
from models.serving.session_store import MemorySessionStore, SessionRecord, encode_state, values_digest


def record(session_id: str, ttl_s: int = 600, model: str = "m") -> SessionRecord:
    return SessionRecord(
        session_id=session_id, model=model, version=3, incarnation="inc-1", ttl_s=ttl_s, expires_at=time.time() + ttl_s
    )


def test_new_stepped_and_reset_records_come_back_as_saved() -> None:
    async def scenario() -> None:
        store = MemorySessionStore()
        new = record("a", ttl_s=1234)
        await store.create(new, max_sessions=10)
        assert await store.get("a") == new

        h = np.arange(10, dtype=np.float32).reshape(1, 10)
        async with store.locked("a") as current:
            stepped = current.stepped(encode_state(h, -h), values_digest([0.5, 0.25]), np.array([0.1, 0.9]))
            saved = await store.save(stepped)
        assert saved.steps_seen == 2 and saved.state == encode_state(h, -h)
        assert await store.get("a") == saved
        assert (await store.get("a")).replay(0, values_digest([0.5, 0.25])) == pytest.approx([0.1, 0.9])

        async with store.locked("a") as current:
            reset = await store.save(current.reset())
        assert reset.state == b"" and reset.last_step == b"" and reset.steps_seen == 0
        assert await store.get("a") == reset

    asyncio.run(scenario())


def test_a_records_copies_change_only_what_they_name_and_leave_it_untouched() -> None:
    before = SessionRecord(
        session_id="a", model="m", version=3, incarnation="inc-1", ttl_s=60, expires_at=1.0, steps_seen=4, state=b"s",
        last_step=b"l",
    )
    original = replace(before)
    assert before.touched(10.0) == replace(before, expires_at=70.0)
    stepped = before.stepped(b"S", b"d" * 8, np.array([[0.5], [0.25]]))
    assert stepped == replace(before, steps_seen=6, state=b"S", last_step=b"d" * 8 + np.array([0.5, 0.25], np.float32).tobytes())
    assert stepped.reset() == replace(before, steps_seen=0, state=b"", last_step=b"")
    assert before == original
    # SessionRecord._but names every field: a new one must be added there too (this list is the reminder).
    assert [f.name for f in fields(SessionRecord)] == [
        "session_id", "model", "version", "incarnation", "ttl_s", "expires_at", "steps_seen", "state", "last_step"
    ]


def test_sessions_on_one_version_share_one_pin_and_are_not_tracked_by_the_collector() -> None:
    async def scenario() -> MemorySessionStore:
        store = MemorySessionStore()
        for i in range(3):
            await store.create(record(f"s{i}", model="".join(["m", str(i)])[:1]), max_sessions=10)  # equal, not identical, names
        return store

    store = asyncio.run(scenario())
    # A tuple is untracked in a collection that finds everything in it untracked: the pin first, then the record.
    gc.collect()
    gc.collect()
    pins = {id(stored[3]) for stored in store._records.values()}
    assert len(pins) == 1
    assert not any(gc.is_tracked(stored) for stored in store._records.values())


def test_reap_drops_only_expired_sessions_across_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session_store, "_REAP_SLICE", 2)

    async def scenario() -> None:
        store = MemorySessionStore()
        for i in range(7):
            live = record(f"s{i}")
            await store.create(live if i % 2 else SessionRecord(**{**_fields(live), "expires_at": time.time() - 1}), 10)
        assert await store.reap() == 4
        for i in range(7):
            if i % 2:
                assert (await store.get(f"s{i}")).session_id == f"s{i}"
            else:
                with pytest.raises(SessionNotFound):
                    await store.get(f"s{i}")

    asyncio.run(scenario())


def _fields(rec: SessionRecord) -> dict[str, object]:
    return {name: getattr(rec, name) for name in SessionRecord.__slots__}


def test_a_session_lock_serializes_times_out_survives_cancelled_waiters_and_is_dropped_when_free() -> None:
    async def scenario() -> None:
        store = MemorySessionStore(lock_wait_s=0.05)
        await store.create(record("a"), max_sessions=10)
        order: list[str] = []
        release = asyncio.Event()

        async def holder() -> None:
            async with store.locked("a"):
                order.append("first in")
                await release.wait()
                order.append("first out")

        async def waiter() -> None:
            async with store.locked("a"):
                order.append("second in")

        first = asyncio.create_task(holder())
        await asyncio.sleep(0)
        with pytest.raises(SessionBusy):  # waited lock_wait_s for a lock held all along
            async with store.locked("a"):
                pytest.fail("entered a held lock")
        cancelled = asyncio.create_task(waiter())
        await asyncio.sleep(0)
        cancelled.cancel()
        await asyncio.gather(cancelled, return_exceptions=True)
        second = asyncio.create_task(waiter())
        await asyncio.sleep(0)
        release.set()
        await asyncio.gather(first, second)
        assert order == ["first in", "first out", "second in"]

        with pytest.raises(SessionNotFound):  # read under the lock: the lock is let go again
            async with store.locked("missing"):
                pytest.fail("entered an unknown session")
        assert store._locks._locks == {}  # nobody holds or waits: nothing kept per session
        async with store.locked("a") as current:
            assert current.session_id == "a"

    asyncio.run(scenario())
