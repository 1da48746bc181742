"""Sessions through Redis stay exactly-once under faults: real replicas, a real redis-server, a proxy between.

Two ``python -m service`` replicas share sessions in a redis-server of the test's own; each reaches it
through a ``FaultProxy`` that can delay or drop replies (or cut the link). Replicas are frozen (SIGSTOP),
killed (SIGKILL), Redis is paused, stopped and restarted. Lock lifetime, lock wait and the Redis deadline
are shortened by environment variables so the whole module runs in well under a minute of faults.
Each case asserts the exact status and body, then what the session holds afterwards.
"""

import hashlib
import random
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from models.serving.session_store import LOCK_AND_READ, SAVE_AND_UNLOCK
from tests.faults import RedisServer
from tests.process import ServiceProcess, process_factory
from tests.proxy import FaultProxy

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

LOCK_TTL_S = 2.0
LOCK_WAIT_S = 4.0
#: Long enough not to expire under this shared machine's load, well within the lock lifetime.
STORE_TIMEOUT_S = 0.8
MAX_SESSIONS = 100
#: A stalled or unreachable Redis is answered within this (issue 9).
UNAVAILABLE_WITHIN_S = 2.0
#: How long a frozen or killed replica's lock may block its session: its lifetime plus polling and load.
LOCK_BOUND_S = LOCK_TTL_S + 1.0
MODEL = "m-lstm"

UNAVAILABLE = "The session store (Redis) did not answer in time; nothing was changed. Retry shortly."
UNKNOWN = ("The change was sent to the session store (Redis), which did not confirm it in time: it may or may not "
           "be applied. Read the session, or retry with 'seq'.")
UNKNOWN_CREATE = ("The change was sent to the session store (Redis), which did not confirm it in time: it may or may "
                  "not be applied. If it was, that session (whose id you did not get) expires unused after its ttl_s; "
                  "start another.")


def sha(script: str) -> bytes:
    """How a script's call looks on the wire (EVALSHA <sha>): lets the proxy pick one store operation."""
    return hashlib.sha1(script.encode()).hexdigest().encode()


@dataclass
class Cluster:
    redis: RedisServer
    proxies: dict[str, FaultProxy]
    replicas: dict[str, ServiceProcess]
    prefix: str

    def lock_held(self, session_id: str) -> bool:
        return bool(self.redis.client().exists(f"{self.prefix}lock:{session_id}"))


@pytest.fixture(scope="module")
def cluster(trained_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("session-faults")
    server = RedisServer(workdir)
    proxies = {name: FaultProxy(server.port, seed=i) for i, name in enumerate("ab")}
    start, started = process_factory(workdir)
    prefix = f"faults-{uuid.uuid4().hex[:8]}:"
    with ExitStack() as closing:
        for proxy in proxies.values():
            closing.enter_context(proxy)
        try:
            replicas = {
                name: start(
                    trained_dir, name=f"replica-{name}", SESSION_STORE=f"redis://127.0.0.1:{proxy.port}/0",
                    SESSION_KEY_PREFIX=prefix, SESSION_LOCK_TTL_S=str(LOCK_TTL_S), SESSION_LOCK_WAIT_S=str(LOCK_WAIT_S),
                    SESSION_STORE_TIMEOUT_S=str(STORE_TIMEOUT_S), MAX_SESSIONS=str(MAX_SESSIONS), DEMO_MODEL="false",
                )
                for name, proxy in proxies.items()
            }
            for replica in replicas.values():
                replica.wait_ready()
            yield Cluster(server, proxies, replicas, prefix)
        finally:
            for replica in started:
                replica.kill()
            server.kill()


@pytest.fixture(autouse=True)
def healthy(cluster: Cluster) -> Iterator[None]:
    """Every test starts and ends with no fault injected: proxies clear, Redis and replicas running."""
    yield
    for proxy in cluster.proxies.values():
        proxy.clear()
    if cluster.redis.process.poll() is None:
        cluster.redis.resume()
    else:
        cluster.redis.start()
    for replica in cluster.replicas.values():
        if replica.process.poll() is None:
            replica.process.send_signal(signal.SIGCONT)  # a test that froze a replica may have failed


def create(replica: ServiceProcess) -> str:
    response = replica.http.post(f"/models/{MODEL}/sessions")
    assert response.status_code == 201, response.text
    return response.json()["session_id"]


def post_step(replica: ServiceProcess, session_id: str, values: list[float], seq: int | None = None) -> httpx.Response:
    body: dict[str, Any] = {"values": values} if seq is None else {"values": values, "seq": seq}
    return replica.http.post(f"/sessions/{session_id}/step", json=body)


def steps_seen(replica: ServiceProcess, session_id: str) -> int:
    response = replica.http.get(f"/sessions/{session_id}")
    assert response.status_code == 200, response.text
    return response.json()["steps_seen"]


def replay(replica: ServiceProcess, values: list[float]) -> list[float]:
    """The serial reference: ``values`` stepped in one request on a new session (then deleted)."""
    session_id = create(replica)
    response = post_step(replica, session_id, values)
    assert response.status_code == 200, response.text
    replica.http.delete(f"/sessions/{session_id}")
    return response.json()["probabilities"]


def timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def error(response: httpx.Response) -> dict[str, Any]:
    return {"status": response.status_code, **response.json()}


def long_step_in_background(replica: ServiceProcess, session_id: str) -> Any:
    """A step long enough (50,000 values) to be frozen or killed mid-way; returns its future response."""
    values = np.random.default_rng(1).normal(0, 1, 50_000).round(3).tolist()
    pool = ThreadPoolExecutor(1)

    def send() -> httpx.Response:
        with httpx.Client(base_url=replica.url, timeout=120) as http:
            return http.post(f"/sessions/{session_id}/step", json={"values": values})

    future = pool.submit(send)
    pool.shutdown(wait=False)
    return future


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not {what} after {timeout} s"
        time.sleep(0.01)


def test_late_save_acknowledgement_answers_state_unknown_and_applies_the_step_once(cluster: Cluster) -> None:
    a, b = cluster.replicas["a"], cluster.replicas["b"]
    session_id = create(b)
    cluster.proxies["a"].hold_replies(after=sha(SAVE_AND_UNLOCK), delay_s=1.5)  # Redis saves; its "OK" comes late

    response, elapsed = timed(lambda: post_step(a, session_id, [0.5]))

    assert elapsed < UNAVAILABLE_WITHIN_S
    assert error(response) == {"status": 503, "error": {
        "code": "state_unknown", "message": UNKNOWN, "details": {"session_id": session_id}}}
    assert steps_seen(b, session_id) == 1  # applied once: never handed on and applied again
    retried = post_step(a, session_id, [0.5], seq=0)  # what a client does after state_unknown
    assert retried.status_code == 200 and retried.json()["steps_seen"] == 1
    np.testing.assert_allclose(retried.json()["probabilities"], replay(b, [0.5]), atol=1e-6)
    assert steps_seen(b, session_id) == 1


def test_a_frozen_replica_loses_its_lock_and_its_late_save_is_refused(cluster: Cluster) -> None:
    a, b = cluster.replicas["a"], cluster.replicas["b"]
    session_id = create(b)
    frozen_step = long_step_in_background(a, session_id)
    wait_until(lambda: cluster.lock_held(session_id), 30, "locked by replica a")
    a.process.send_signal(signal.SIGSTOP)  # frozen mid-step
    try:
        response, elapsed = timed(lambda: post_step(b, session_id, [0.5], seq=0))
    finally:
        a.process.send_signal(signal.SIGCONT)

    assert response.status_code == 200 and response.json()["steps_seen"] == 1
    assert elapsed < LOCK_BOUND_S  # the frozen replica blocked the session only until its lock expired
    late = frozen_step.result(timeout=120)
    assert late.status_code == 409
    assert late.json()["error"]["code"] == "session_busy"
    assert late.json()["error"]["details"] == {"session_id": session_id}
    # No lost update: the session holds b's step, and a's 50,000 values never landed.
    assert steps_seen(b, session_id) == 1
    after = post_step(b, session_id, [0.7], seq=1)
    assert after.status_code == 200, after.text
    np.testing.assert_allclose(after.json()["probabilities"], replay(b, [0.5, 0.7])[1:], atol=1e-6)


def test_a_lost_lock_reply_blocks_the_session_no_longer_than_the_lock_lifetime(cluster: Cluster) -> None:
    a, b = cluster.replicas["a"], cluster.replicas["b"]
    session_id = create(b)
    # Redis takes a's lock, and then a is cut off: the reply never arrives and a cannot release the lock.
    cluster.proxies["a"].hold_replies(after=sha(LOCK_AND_READ), delay_s=None, partition=True)

    locked_at = time.monotonic()
    response, elapsed = timed(lambda: post_step(a, session_id, [0.5]))

    assert elapsed < UNAVAILABLE_WITHIN_S
    assert error(response) == {"status": 503, "error": {
        "code": "state_store_unavailable", "message": UNAVAILABLE, "details": {"session_id": session_id}}}
    assert cluster.lock_held(session_id)  # the orphan lock
    unblocked = post_step(b, session_id, [0.5], seq=0)
    assert unblocked.status_code == 200 and unblocked.json()["steps_seen"] == 1
    assert time.monotonic() - locked_at < LOCK_BOUND_S
    cluster.proxies["a"].clear()
    assert post_step(a, session_id, [0.5], seq=1).json()["steps_seen"] == 2  # a recovers by itself


def test_a_paused_redis_answers_503_within_2_s_and_the_service_recovers(cluster: Cluster) -> None:
    a, b = cluster.replicas["a"], cluster.replicas["b"]
    session_id = create(a)
    assert post_step(a, session_id, [0.1], seq=0).status_code == 200
    cluster.redis.pause()
    try:
        unavailable = {"code": "state_store_unavailable", "message": UNAVAILABLE, "details": {"session_id": session_id}}
        for call, expected in (
            (lambda: post_step(a, session_id, [0.2], seq=1), unavailable),  # its lock never came: nothing changed
            (lambda: post_step(b, session_id, [0.2]), unavailable),
            (lambda: a.http.get(f"/sessions/{session_id}"), unavailable),
            (lambda: b.http.post(f"/sessions/{session_id}/reset"), unavailable),
            # A create is one script, sent to the paused Redis: it may run when Redis wakes up.
            (lambda: a.http.post(f"/models/{MODEL}/sessions"), {"code": "state_unknown", "message": UNKNOWN_CREATE, "details": {}}),
        ):
            response, elapsed = timed(call)
            assert elapsed < UNAVAILABLE_WITHIN_S
            assert error(response) == {"status": 503, "error": expected}
        live, elapsed = timed(lambda: a.http.get("/health/live"))
        assert live.status_code == 200 and elapsed < 0.5
    finally:
        cluster.redis.resume()
    # Recovers by itself: the next step is accepted as soon as a lock taken while paused (if any) expires.
    deadline = time.monotonic() + LOCK_BOUND_S + 2
    while (response := post_step(b, session_id, [0.2], seq=1)).status_code != 200:
        assert time.monotonic() < deadline, response.text
    assert response.json()["steps_seen"] == 2
    np.testing.assert_allclose(response.json()["probabilities"], replay(a, [0.1, 0.2])[1:], atol=1e-6)


def test_redis_stopped_and_restarted_answers_503_then_continues_the_session(cluster: Cluster) -> None:
    a, b = cluster.replicas["a"], cluster.replicas["b"]
    session_id = create(a)
    assert post_step(a, session_id, [0.1], seq=0).status_code == 200
    cluster.redis.stop()
    response, elapsed = timed(lambda: post_step(b, session_id, [0.2], seq=1))
    assert elapsed < UNAVAILABLE_WITHIN_S
    assert error(response) == {"status": 503, "error": {
        "code": "state_store_unavailable", "message": UNAVAILABLE, "details": {"session_id": session_id}}}
    cluster.redis.start()  # same port and append-only file: the session is still there, its scripts are not
    for replica in (b, a):
        deadline = time.monotonic() + 5
        while (response := post_step(replica, session_id, [0.2], seq=1)).status_code != 200:
            assert time.monotonic() < deadline, response.text
            time.sleep(0.1)
        assert response.json()["steps_seen"] == 2  # applied by b, answered again to a
    np.testing.assert_allclose(response.json()["probabilities"], replay(a, [0.1, 0.2])[1:], atol=1e-6)


def test_the_session_cap_holds_across_replicas_under_concurrent_creates(cluster: Cluster) -> None:
    cluster.redis.client().flushall()  # our own server: start from zero live sessions

    def create_on(i: int) -> httpx.Response:
        # A new connection each: no keep-alive connection closing under a request on this loaded machine.
        return httpx.post(f"{cluster.replicas['ab'[i % 2]].url}/models/{MODEL}/sessions", timeout=30)

    with ThreadPoolExecutor(32) as pool:
        responses = list(pool.map(create_on, range(150)))
    statuses = Counter(r.status_code for r in responses)
    live = cluster.redis.client().zcard(f"{cluster.prefix}sessions")
    # Never past the cap, and reached: 100 of 150 creates got through. A create that missed its deadline on
    # this shared machine answers 503 instead (then it may or may not have created a session).
    assert statuses[201] <= MAX_SESSIONS and live == MAX_SESSIONS, (statuses, live)
    assert set(statuses) <= {201, 429, 503}
    if not statuses[503]:
        assert statuses == {201: MAX_SESSIONS, 429: 150 - MAX_SESSIONS}
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.json() == {"error": {
        "code": "capacity_exceeded", "message": f"{MAX_SESSIONS} sessions are live; delete one or wait for expiry.",
        "details": {"limit": MAX_SESSIONS}}}
    cluster.redis.client().flushall()


# --------------------------------------------------------------------------------------------------
# The history check


@dataclass(frozen=True)
class Attempt:
    session_id: str
    seq: int
    values: tuple[float, ...]
    status: int | None  # None: no answer (transport error)
    body: Any


#: Outcomes after which the step may have been applied without the client seeing it.
def _maybe_applied(attempt: Attempt) -> bool:
    return attempt.status is None or (attempt.status == 503 and attempt.body["error"]["code"] == "state_unknown")


ALLOWED = {(200, None), (409, "step_out_of_order"), (409, "session_busy"), (503, "state_unknown"),
           (503, "state_store_unavailable"), (None, None)}


def drive(cluster: Cluster, session_id: str, seed: int, stop: threading.Event, log: list[Attempt]) -> None:
    """A client that steps ``session_id`` with ``seq`` through random replicas, retrying an unanswered step
    as it is (same seq, same values), until ``stop``."""
    rnd = random.Random(seed)
    clients = {name: httpx.Client(base_url=r.url, timeout=20) for name, r in cluster.replicas.items()}
    belief = 0
    try:
        while not stop.is_set():
            values = tuple(round(rnd.uniform(-2, 2), 3) for _ in range(rnd.randint(1, 3)))
            seq = belief
            for _ in range(10):
                try:
                    response = clients[rnd.choice("ab")].post(
                        f"/sessions/{session_id}/step", json={"values": list(values), "seq": seq})
                    status, body = response.status_code, response.json()
                except httpx.HTTPError as exc:
                    status, body = None, repr(exc)
                log.append(Attempt(session_id, seq, values, status, body))
                if status == 200:
                    belief = body["steps_seen"]
                    break
                if status == 409 and body["error"]["code"] == "step_out_of_order":
                    belief = body["error"]["details"]["expected"]
                    break
                time.sleep(0.02)  # session_busy, state_unknown, unavailable, no answer: the same step again
    finally:
        for client in clients.values():
            client.close()


def inject_faults(cluster: Cluster, stop: threading.Event) -> None:
    """Faults on a schedule for 11.5 s, then ``stop``."""
    a, b = cluster.proxies["a"], cluster.proxies["b"]

    def freeze_replica_a() -> None:
        process = cluster.replicas["a"].process
        process.send_signal(signal.SIGSTOP)
        time.sleep(LOCK_TTL_S + 1.0)  # longer than a lock lives: a's locks expire, the other replica goes on
        process.send_signal(signal.SIGCONT)

    schedule: list[tuple[float, Callable[[], None]]] = [
        (0.5, freeze_replica_a),
        # Some replies to replica a come late, a few past the deadline.
        (4.0, lambda: a.hold_replies(delay_s=1.5 * STORE_TIMEOUT_S, times=None, probability=0.15, jitter=True)),
        # Three of replica b's saves are acknowledged past the deadline (state_unknown), and three of replica
        # a's saves reach Redis only after their lock expired: they must be refused.
        (4.0, lambda: b.hold_replies(after=sha(SAVE_AND_UNLOCK), delay_s=1.5 * STORE_TIMEOUT_S, times=3)),
        (4.0, lambda: a.hold_requests(after=sha(SAVE_AND_UNLOCK), delay_s=LOCK_TTL_S + 0.5, times=3)),
        (6.0, lambda: (a.clear(), b.clear())),
        (6.5, cluster.redis.pause),
        (7.3, cluster.redis.resume),
        # Two of replica a's lock replies are lost: orphan locks until they expire.
        (8.0, lambda: a.hold_replies(after=sha(LOCK_AND_READ), delay_s=None, times=2)),
        (8.5, lambda: b.hold_replies(delay_s=1.5 * STORE_TIMEOUT_S, times=None, probability=0.15, jitter=True)),
        (10.5, lambda: (a.clear(), b.clear())),
    ]
    started = time.monotonic()
    for at, fault in schedule:
        time.sleep(max(0.0, started + at - time.monotonic()))
        fault()
    time.sleep(max(0.0, started + 11.5 - time.monotonic()))
    stop.set()


def serial_history(accepted: dict[int, tuple[tuple[float, ...], list[float]]], unknown: dict[int, set[tuple[float, ...]]],
                   final: int, check: Callable[[list[tuple[float, ...]]], bool]) -> list[tuple[float, ...]] | None:
    """The one serial history from 0 to ``final`` through every accepted step, filling each gap with a step
    whose answer was lost (a step applied without a 200), that ``check`` accepts; ``None`` if there is none."""

    def extend(position: int, history: list[tuple[float, ...]]) -> list[tuple[float, ...]] | None:
        if position == final:
            return history if set(accepted) <= _starts(history) and check(history) else None
        if position > final:
            return None
        options = [accepted[position][0]] if position in accepted else sorted(unknown.get(position, ()))
        for values in options:
            found = extend(position + len(values), [*history, values])
            if found is not None:
                return found
        return None

    return extend(0, [])


def _starts(history: list[tuple[float, ...]]) -> set[int]:
    return set(np.cumsum([0] + [len(v) for v in history[:-1]]).tolist()) if history else set()


def test_every_session_history_is_serial_and_every_answer_equals_its_replay(cluster: Cluster) -> None:
    """Two clients per session on six sessions, through both replicas, while replica a is frozen, replies are
    delayed and dropped, saves reach Redis after their lock expired, and Redis is paused. Every 200 answer must be one step of a single serial history per
    session (no step applied twice, none lost) and equal that history's replay (1e-5)."""
    a, b = cluster.replicas["a"], cluster.replicas["b"]
    sessions = [create(b) for _ in range(6)]
    log: list[Attempt] = []
    stop = threading.Event()
    clients = [threading.Thread(target=drive, args=(cluster, sid, 10 * i + k, stop, log))
               for i, sid in enumerate(sessions) for k in range(2)]
    for thread in clients:
        thread.start()
    try:
        inject_faults(cluster, stop)
    finally:
        stop.set()
        for thread in clients:
            thread.join(60)

    outcomes = Counter((x.status, x.body["error"]["code"] if x.status not in (200, None) else None) for x in log)
    assert set(outcomes) <= ALLOWED, outcomes
    # The faults bit: steps were accepted, some saves went unconfirmed, some requests found Redis unavailable.
    assert outcomes[(200, None)] >= 30 and outcomes[(503, "state_unknown")] >= 1, outcomes
    assert outcomes[(503, "state_store_unavailable")] >= 1, outcomes

    for session_id in sessions:
        attempts = [x for x in log if x.session_id == session_id]
        accepted: dict[int, tuple[tuple[float, ...], list[float]]] = {}
        for x in attempts:
            if x.status == 200:
                assert x.body["steps_seen"] == x.seq + len(x.values)
                answer = (x.values, x.body["probabilities"])
                # Answers to one seq (a step and its retries) are the very same step and the very same answer.
                assert accepted.setdefault(x.seq, answer) == answer, (session_id, x.seq)
        unknown: dict[int, set[tuple[float, ...]]] = {}
        for x in attempts:
            if _maybe_applied(x) and accepted.get(x.seq, ((),))[0] != x.values:
                unknown.setdefault(x.seq, set()).add(x.values)
        final = steps_seen(b, session_id)

        def equals_replay(history: list[tuple[float, ...]]) -> bool:
            reference = replay(a, [v for values in history for v in values])
            return all(np.allclose(probabilities, reference[seq:seq + len(values)], atol=1e-5, rtol=0)
                       for seq, (values, probabilities) in accepted.items())

        history = serial_history(accepted, unknown, final, equals_replay)
        assert history is not None, f"{session_id}: no serial history through {sorted(accepted)} to {final}"
        # The stored state is that history's: one more step continues it exactly.
        last = post_step(a, session_id, [0.25], seq=final)
        assert last.status_code == 200, last.text
        expected = replay(b, [v for values in history for v in values] + [0.25])[-1]
        assert abs(last.json()["probability"] - expected) <= 1e-5


def test_a_step_longer_than_the_lock_lifetime_keeps_its_lock_and_is_applied(cluster: Cluster) -> None:
    a = cluster.replicas["a"]
    session_id = create(a)
    # The longest step a body may carry runs in under 2 s on an idle machine: throttle replica a (frozen 3/4 of
    # the time, as on an overloaded host) so that the step outlives its lock several times over.
    values = np.random.default_rng(2).normal(0, 1, 100_000).round(3).tolist()
    done = threading.Event()

    def throttle() -> None:
        while not done.is_set():
            a.process.send_signal(signal.SIGSTOP)
            time.sleep(0.15)
            a.process.send_signal(signal.SIGCONT)
            time.sleep(0.05)

    throttler = threading.Thread(target=throttle, daemon=True)
    started = time.monotonic()
    throttler.start()
    try:
        response = a.http.post(f"/sessions/{session_id}/step", json={"values": values, "seq": 0}, timeout=120)
    finally:
        done.set()
        throttler.join()
    assert time.monotonic() - started > LOCK_TTL_S, response.text[:300]  # else this proves nothing about renewal
    assert response.status_code == 200, response.text  # renewed while it ran: its save was not refused
    assert response.json()["steps_seen"] == len(values) == steps_seen(cluster.replicas["b"], session_id)


def test_a_killed_replica_blocks_its_sessions_no_longer_than_the_lock_lifetime(cluster: Cluster) -> None:
    """Last in the module: replica a does not come back."""
    a, b = cluster.replicas["a"], cluster.replicas["b"]
    session_id = create(b)
    lost_step = long_step_in_background(a, session_id)
    wait_until(lambda: cluster.lock_held(session_id), 30, "locked by replica a")
    a.process.kill()  # SIGKILL mid-step
    killed_at = time.monotonic()
    response = post_step(b, session_id, [0.5], seq=0)
    assert response.status_code == 200 and response.json()["steps_seen"] == 1
    assert time.monotonic() - killed_at < LOCK_BOUND_S
    with pytest.raises(httpx.HTTPError):
        lost_step.result(timeout=30)
    assert steps_seen(b, session_id) == 1
