"""WebSocket streams against real ``python -m service`` replicas sharing Redis, with a real WebSocket client
(the ``websockets`` package): Keras parity at every step, a session handed from one replica to the other,
errors that keep a stream open, fatal close codes, streams outliving the HTTP read deadlines, and a client
that stops reading held by the backpressure bound (the server's RSS measured before and after)."""

import asyncio
import json
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import connect as connect_async
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.process import ServiceProcess, drop_redis_keys, process_factory
from tests.test_sessions import keras_stateful_probabilities, random_sequence

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

REDIS_URL = "redis://127.0.0.1:6379/0"
MODEL = "m-lstm"
#: Replica a's bound on unanswered messages per stream (small, so the backpressure test reaches it soon).
MAX_PENDING = 4
#: The HTTP deadlines of both replicas, shortened: a stream idle longer than these must stay open.
READ_DEADLINE_S = 1.0


@dataclass
class Replicas:
    a: ServiceProcess
    b: ServiceProcess
    model_dir: Path


@pytest.fixture(scope="module")
def replicas(trained_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    workdir = tmp_path_factory.mktemp("streams")
    start, started = process_factory(workdir)
    prefix = f"stream-test-{uuid.uuid4().hex[:8]}:"
    common = dict(
        SESSION_STORE=REDIS_URL, SESSION_KEY_PREFIX=prefix, DEMO_MODEL="false",
        HEADER_READ_TIMEOUT_S=str(READ_DEADLINE_S), BODY_READ_TIMEOUT_S=str(READ_DEADLINE_S),
        # A generous Redis deadline: these tests check streams on a shared, busy machine, not deadlines
        # (tests/e2e/test_session_faults.py does).
        SESSION_STORE_TIMEOUT_S="5",
        SESSION_REAP_INTERVAL_S="0.5",
    )
    with ExitStack() as closing:
        closing.callback(drop_redis_keys, REDIS_URL, prefix)
        closing.callback(lambda: [replica.kill() for replica in started])
        a = start(trained_dir, name="replica-a", STREAM_MAX_PENDING=str(MAX_PENDING), **common)
        b = start(trained_dir, name="replica-b", **common)
        a.wait_ready()
        b.wait_ready()
        yield Replicas(a, b, trained_dir)


def ws_url(replica: ServiceProcess, path: str) -> str:
    return f"ws://127.0.0.1:{replica.port}{path}"


def stream_values(ws: ClientConnection, values: list[float], first_seq: int | None = None) -> list[dict[str, Any]]:
    """Send every value as its own message (pipelined), then read the answers in order."""
    for i, value in enumerate(values):
        body: dict[str, Any] = {"values": [value]}
        if first_seq is not None:
            body["seq"] = first_seq + i
        ws.send(json.dumps(body))
    return [json.loads(ws.recv(timeout=30)) for _ in values]


def test_a_streamed_sequence_matches_keras_at_every_step_and_predict(replicas: Replicas) -> None:
    meta = replicas.a.http.get(f"/models/{MODEL}").json()
    values = random_sequence(meta, seed=21)
    assert len(values) == meta["max_len"]
    with connect(ws_url(replicas.a, f"/models/{MODEL}/stream")) as ws:
        opened = json.loads(ws.recv(timeout=30))
        answers = stream_values(ws, values)
    assert [a["steps_seen"] for a in answers] == list(range(1, len(values) + 1))
    expected = keras_stateful_probabilities(replicas.model_dir, meta, values)
    np.testing.assert_allclose([a["probability"] for a in answers], expected, atol=1e-5)
    predicted = replicas.a.predict(MODEL, [values])["predictions"][0]["probability"]
    assert abs(predicted - answers[-1]["probability"]) <= 1e-5
    assert replicas.b.http.get(f"/sessions/{opened['session_id']}").json()["steps_seen"] == len(values)


def test_a_stream_on_one_replica_goes_on_from_the_other(replicas: Replicas) -> None:
    meta = replicas.a.http.get(f"/models/{MODEL}").json()
    values = random_sequence(meta, seed=22)
    half = len(values) // 2
    with connect(ws_url(replicas.a, f"/models/{MODEL}/stream")) as on_a:
        session_id = json.loads(on_a.recv(timeout=30))["session_id"]
        first = stream_values(on_a, values[:half], first_seq=0)
    # Reconnecting elsewhere: the first message says where the session is, so the client resumes with seq.
    with connect(ws_url(replicas.b, f"/sessions/{session_id}/stream")) as on_b:
        resumed = json.loads(on_b.recv(timeout=30))
        assert resumed["session_id"] == session_id and resumed["steps_seen"] == half
        rest = stream_values(on_b, values[half:], first_seq=half)
    expected = keras_stateful_probabilities(replicas.model_dir, meta, values)
    np.testing.assert_allclose([a["probability"] for a in first + rest], expected, atol=1e-5)
    assert rest[-1]["steps_seen"] == len(values)


def test_errors_mid_stream_keep_it_open_and_fatal_ones_close_it(replicas: Replicas) -> None:
    with connect(ws_url(replicas.a, f"/models/{MODEL}/stream")) as ws:
        session_id = json.loads(ws.recv(timeout=30))["session_id"]
        ws.send('{"values": [0.1], "seq": 0}')
        ws.send('{"values": []}')
        ws.send('{"values": [0.2], "seq": 7}')
        ws.send("[1, 2")
        ws.send('{"values": [0.2], "seq": 1}')
        answers = [json.loads(ws.recv(timeout=30)) for _ in range(5)]
        assert [a.get("steps_seen") or a["error"]["code"] for a in answers] == [
            1, "validation_error", "step_out_of_order", "validation_error", 2,
        ]
        # The session ended on the other replica: the next step is answered, then the stream closes with 4404.
        assert replicas.b.http.delete(f"/sessions/{session_id}").status_code == 204
        ws.send('{"values": [0.3]}')
        assert json.loads(ws.recv(timeout=30))["error"]["code"] == "session_not_found"
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4404, "session_not_found")


def test_a_message_larger_than_the_body_limit_closes_the_stream_with_1009(replicas: Replicas) -> None:
    with connect(ws_url(replicas.b, f"/models/{MODEL}/stream")) as ws:
        json.loads(ws.recv(timeout=30))
        ws.send('{"values": [0.5]}'.ljust(10 * 1024 * 1024 + 1))  # MAX_BODY_BYTES is 10 MiB by default
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


def test_a_stream_stays_open_past_the_http_read_deadlines(replicas: Replicas) -> None:
    with connect(ws_url(replicas.b, f"/models/{MODEL}/stream")) as ws:
        json.loads(ws.recv(timeout=30))
        time.sleep(READ_DEADLINE_S * 2.5)
        ws.send('{"values": [0.5]}')
        assert json.loads(ws.recv(timeout=30))["steps_seen"] == 1


def test_a_snapshot_taken_on_one_replica_and_a_fork_continue_on_the_other(replicas: Replicas) -> None:
    meta = replicas.a.http.get(f"/models/{MODEL}").json()
    values = random_sequence(meta, seed=23)
    half = len(values) // 2
    with connect(ws_url(replicas.a, f"/models/{MODEL}/stream")) as on_a:
        session_id = json.loads(on_a.recv(timeout=30))["session_id"]
        stream_values(on_a, values[:half])
        snapshot = replicas.a.http.get(f"/sessions/{session_id}/state").json()
        fork = replicas.b.http.post(f"/models/{MODEL}/sessions", json={"fork_of": session_id}).json()["session_id"]
        original = stream_values(on_a, values[half:], first_seq=half)
    restored = replicas.b.http.post(f"/models/{MODEL}/sessions", json={"state": snapshot}).json()["session_id"]
    for other in (fork, restored):
        with connect(ws_url(replicas.b, f"/sessions/{other}/stream")) as on_b:
            assert json.loads(on_b.recv(timeout=30))["steps_seen"] == half
            continued = stream_values(on_b, values[half:], first_seq=half)
        np.testing.assert_allclose([a["probability"] for a in continued], [a["probability"] for a in original], atol=1e-6)


def metric(replica: ServiceProcess, name: str, labels: str = "") -> float:
    text = replica.http.get("/metrics").text
    for line in text.splitlines():
        if line.startswith(f"{name}{labels} "):
            return float(line.split()[-1])
    return 0.0


def test_session_metrics_move_on_both_replicas_and_an_expiry_is_counted_once(replicas: Replicas) -> None:
    model = "m-td"  # no other test here uses it: the live gauge is exact
    created = metric(replicas.a, "lstm_serve_sessions_created_total", f'{{model="{model}"}}')
    expired = sum(metric(r, "lstm_serve_sessions_expired_total") for r in (replicas.a, replicas.b))
    with connect(ws_url(replicas.a, f"/models/{model}/stream?ttl_s=2")) as ws:
        json.loads(ws.recv(timeout=30))
        stream_values(ws, [0.1, 0.2])
        for replica in (replicas.a, replicas.b):  # one store: both replicas count the live session
            assert metric(replica, "lstm_serve_sessions_live", f'{{model="{model}"}}') == 1.0
    assert metric(replicas.a, "lstm_serve_sessions_created_total", f'{{model="{model}"}}') == created + 1
    assert metric(replicas.a, "lstm_serve_session_steps_total", f'{{model="{model}"}}') >= 2.0
    assert metric(replicas.a, "lstm_serve_batch_size_requests_count", '{kind="step"}') >= 2.0
    deadline = time.monotonic() + 15
    while metric(replicas.b, "lstm_serve_sessions_live", f'{{model="{model}"}}') and time.monotonic() < deadline:
        time.sleep(0.25)
    time.sleep(1.0)  # both reapers have swept since
    assert metric(replicas.b, "lstm_serve_sessions_live", f'{{model="{model}"}}') == 0.0
    assert sum(metric(r, "lstm_serve_sessions_expired_total") for r in (replicas.a, replicas.b)) == expired + 1


def test_steps_of_many_streams_are_batched_together(replicas: Replicas) -> None:
    streams, messages = 32, 20

    async def drive() -> list[list[int]]:
        async def one() -> list[int]:
            async with connect_async(ws_url(replicas.b, f"/models/{MODEL}/stream")) as ws:
                await ws.recv()
                for _ in range(messages):
                    await ws.send('{"values": [0.5]}')
                return [json.loads(await ws.recv())["steps_seen"] for _ in range(messages)]

        return await asyncio.gather(*(one() for _ in range(streams)))

    count = metric(replicas.b, "lstm_serve_batch_size_requests_count", '{kind="step"}')
    total = metric(replicas.b, "lstm_serve_batch_size_requests_sum", '{kind="step"}')
    assert asyncio.run(drive()) == [list(range(1, messages + 1))] * streams
    batches = metric(replicas.b, "lstm_serve_batch_size_requests_count", '{kind="step"}') - count
    steps = metric(replicas.b, "lstm_serve_batch_size_requests_sum", '{kind="step"}') - total
    assert steps == streams * messages
    assert batches < steps  # engine calls took steps of several streams at once


def rss_bytes(replica: ServiceProcess) -> int:
    for line in Path(f"/proc/{replica.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


#: A client that never reads tries to push this much; without a bound the server would buffer it all. The
#: kernel alone holds about 200 MB for one loopback connection here (tcp_rmem up to 32 MiB, scaled).
PUSH_BYTES = 512 * 1024 * 1024
#: What a second flood may add to the server's RSS after a first one: the first raises it once (by about
#: 130 MiB here, the same whether 180 or 240 MB were pushed: allocator working set), the next must not grow
#: with what was pushed. Measured: under 24 MiB on a quiet machine, 40 MiB in the full suite beside other
#: processes (allocator arenas of busier threads); a server buffering the flood would add hundreds.
RSS_BOUND_BYTES = 64 * 1024 * 1024
CLIENT_SOCKET_BUFFER = 64 * 1024
VALUES_PER_MESSAGE = 200


@dataclass
class Flood:
    session_id: str
    sent: int
    first_answers: list[dict[str, Any]]


def flood_without_reading(replica: ServiceProcess) -> Flood:
    """Open a stream, send 64 KiB messages without reading until the sends block (or PUSH_BYTES), read three
    answers, then drop the connection with everything else unread."""
    # Padded with JSON whitespace: many bytes to buffer for a few milliseconds of stepping each.
    message = json.dumps({"values": [0.5] * VALUES_PER_MESSAGE}).ljust(64 * 1024)

    async def push() -> Flood:
        # Small socket buffers on the client's side, so that what the kernel holds is mostly the server's.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CLIENT_SOCKET_BUFFER)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, CLIENT_SOCKET_BUFFER)
        sock.connect(("127.0.0.1", replica.port))
        sock.setblocking(False)
        # No client pings: their pongs would wait behind the unread messages.
        async with connect_async(
            ws_url(replica, f"/models/{MODEL}/stream"), sock=sock, max_queue=1, ping_interval=None
        ) as ws:
            session_id = json.loads(await ws.recv())["session_id"]
            sent = 0
            while sent * len(message) < PUSH_BYTES:
                try:
                    await asyncio.wait_for(ws.send(message), timeout=3.0)
                except TimeoutError:  # the frame is in our transport's buffer: it counts as sent
                    sent += 1
                    break
                sent += 1
            first = [json.loads(await ws.recv()) for _ in range(3)]
            ws.transport.abort()
            return Flood(session_id, sent, first)

    return asyncio.run(push())


def settled_rss(replica: ServiceProcess) -> int:
    time.sleep(1.0)  # the dropped stream's last step finishes
    return rss_bytes(replica)


def test_a_client_that_stops_reading_is_held_by_the_backpressure_bound(replicas: Replicas) -> None:
    first = flood_without_reading(replicas.a)
    before = settled_rss(replicas.a)
    second = flood_without_reading(replicas.a)
    after = settled_rss(replicas.a)

    for flood in (first, second):
        assert flood.sent * 64 * 1024 < PUSH_BYTES, "the server kept reading from a client that does not read"
        assert [answer["steps_seen"] for answer in flood.first_answers] == [VALUES_PER_MESSAGE * i for i in (1, 2, 3)]
        # The server stepped only what it had room for, not the flood the kernel held.
        applied = replicas.a.http.get(f"/sessions/{flood.session_id}").json()["steps_seen"] // VALUES_PER_MESSAGE
        assert applied < flood.sent // 2, (applied, flood.sent)
    assert after - before < RSS_BOUND_BYTES, (before, after)
    assert replicas.a.http.get("/health/live").status_code == 200
