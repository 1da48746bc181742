"""WebSocket streams in process (Starlette's test client): the same answers as the step route, errors that
keep the stream open, fatal errors that close it with their close code, the API key over both ways, and the
pending bound (with a fake socket whose client stops reading). Real processes, replicas and a flood over TCP:
tests/e2e/test_stream_uvicorn.py."""

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from models.serving.session_service import Stepped
from models.serving.session_store import SessionRecord
from service.api.stream import StreamSteps
from service.metrics import Metrics
from tests.test_sessions import random_sequence


def test_stream_answers_as_the_step_route(trained: TestClient) -> None:
    meta = trained.get("/models/m-lstm").json()
    values = random_sequence(meta, seed=11)[:12]
    by_http = trained.post("/models/m-lstm/sessions").json()["session_id"]
    expected = [trained.post(f"/sessions/{by_http}/step", json={"values": [v]}).json() for v in values]

    with trained.websocket_connect("/models/m-lstm/stream") as ws:
        opened = ws.receive_json()
        assert opened["model"] == "m-lstm" and opened["steps_seen"] == 0 and opened["version"] == meta["version"]
        for v in values:
            ws.send_json({"values": [v]})
        answers = [ws.receive_json() for _ in values]
    assert [a["steps_seen"] for a in answers] == list(range(1, len(values) + 1))
    assert all(a["session_id"] == opened["session_id"] for a in answers)
    np.testing.assert_allclose([a["probability"] for a in answers], [e["probability"] for e in expected], atol=1e-6)
    # The stream's steps are the session's: HTTP sees them.
    assert trained.get(f"/sessions/{opened['session_id']}").json()["steps_seen"] == len(values)


def test_errors_mid_stream_are_answered_and_the_stream_goes_on(trained: TestClient) -> None:
    session_id = trained.post("/models/m-lstm/sessions").json()["session_id"]
    with trained.websocket_connect(f"/sessions/{session_id}/stream") as ws:
        assert ws.receive_json()["session_id"] == session_id
        ws.send_text("not json")
        ws.send_json({"values": ["0.5"]})
        ws.send_json({"values": [0.5], "seq": 0})
        ws.send_json({"values": [0.5], "seq": 5})
        ws.send_json({"values": [0.5], "seq": 0})  # a repeat of the last applied step: answered again
        ws.send_bytes(b'{"values": [0.25], "seq": 1}')
        malformed, wrong_type, first, out_of_order, repeat, second = (ws.receive_json() for _ in range(6))
    assert malformed["error"]["code"] == "validation_error" and malformed["error"]["details"]["field"] == "message"
    assert wrong_type["error"]["code"] == "validation_error"
    assert wrong_type["error"]["details"]["field"] == "values[0]" and wrong_type["error"]["details"]["got"] == "0.5"
    assert first["steps_seen"] == 1
    assert out_of_order["error"]["code"] == "step_out_of_order"
    assert out_of_order["error"]["details"]["expected"] == 1 and out_of_order["error"]["details"]["got"] == 5
    assert repeat == first
    assert second["steps_seen"] == 2
    assert trained.get(f"/sessions/{session_id}").json()["steps_seen"] == 2


def test_a_deleted_session_closes_the_stream_with_4404(trained: TestClient) -> None:
    session_id = trained.post("/models/m-lstm/sessions").json()["session_id"]
    with trained.websocket_connect(f"/sessions/{session_id}/stream") as ws:
        ws.receive_json()
        ws.send_json({"values": [0.1]})
        assert ws.receive_json()["steps_seen"] == 1
        assert trained.delete(f"/sessions/{session_id}").status_code == 204
        ws.send_json({"values": [0.1]})
        assert ws.receive_json()["error"]["code"] == "session_not_found"
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 4404 and closed.value.reason == "session_not_found"


@pytest.mark.parametrize(
    ("path", "close_code", "code"),
    [
        ("/sessions/no-such-session/stream", 4404, "session_not_found"),
        ("/models/no-such-model/stream", 4404, "model_not_found"),
        ("/models/m-bi/stream", 4409, "sessions_unsupported"),
        ("/models/m-lstm/stream?version=99", 4404, "version_not_found"),
    ],
)
def test_a_stream_that_cannot_open_says_why_and_closes(trained: TestClient, path: str, close_code: int, code: str) -> None:
    with trained.websocket_connect(path) as ws:
        assert ws.receive_json()["error"]["code"] == code
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == close_code


def test_the_api_key_by_header_or_subprotocol(app_client: Callable[..., TestClient], trained_dir: Path) -> None:
    client = app_client(trained_dir, api_key="s3cret-key", api_key_all=True)
    with client.websocket_connect("/models/m-lstm/stream") as ws:
        assert ws.receive_json()["error"]["code"] == "unauthorized"
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 4401
    with client.websocket_connect("/models/m-lstm/stream", subprotocols=["lstm-serve", "bearer.wrong"]) as ws:
        assert ws.receive_json()["error"]["code"] == "unauthorized"
    with client.websocket_connect("/models/m-lstm/stream", headers={"Authorization": "Bearer s3cret-key"}) as ws:
        assert ws.receive_json()["steps_seen"] == 0
    # The browser way: the key as a subprotocol beside "lstm-serve", which the server selects.
    with client.websocket_connect("/models/m-lstm/stream", subprotocols=["lstm-serve", "bearer.s3cret-key"]) as ws:
        assert ws.accepted_subprotocol == "lstm-serve"
        assert ws.receive_json()["steps_seen"] == 0
        ws.send_json({"values": [0.3]})
        assert ws.receive_json()["steps_seen"] == 1


class _UnreadSocket:
    """A WebSocket whose client sends ``count`` step messages at once and reads answers only once let."""

    def __init__(self, count: int) -> None:
        self.incoming = [{"type": "websocket.receive", "text": f'{{"values": [0.5], "seq": {i}}}'} for i in range(count)]
        self.incoming.append({"type": "websocket.disconnect", "code": 1000})
        self.received = 0
        self.answers: list[dict] = []
        self.reading = asyncio.Event()

    async def receive(self) -> dict:
        self.received += 1
        return self.incoming[self.received - 1]

    async def send_text(self, text: str) -> None:
        await self.reading.wait()
        self.answers.append(json.loads(text))


class _CountingSessions:
    """Steps that answer at once: what is measured here is the stream's reading, not stepping."""

    def __init__(self) -> None:
        self.record = SessionRecord(session_id="s", model="m", version=1, ttl_s=60, expires_at=0.0)

    async def step(self, session_id: str, values: list[float], seq: int | None = None) -> Stepped:
        self.record = self.record.stepped(b"", b"", np.full(len(values), 0.5))
        return Stepped(self.record, np.full(len(values), 0.5), replayed=False)


def test_a_stream_stops_reading_at_the_pending_bound_until_its_answers_are_read() -> None:
    async def scenario() -> tuple[int, _UnreadSocket]:
        socket = _UnreadSocket(100)
        steps = StreamSteps(socket, _CountingSessions(), Metrics(), "s", max_pending=4)  # type: ignore[arg-type]
        running = asyncio.ensure_future(steps.run())
        for _ in range(200):  # every ready task runs to where it waits
            await asyncio.sleep(0)
        read_while_blocked = socket.received
        socket.reading.set()  # the client reads again
        await running
        return read_while_blocked, socket

    read_while_blocked, socket = asyncio.run(scenario())
    assert read_while_blocked == 4  # the bound: four messages read and unanswered, then no more
    assert [answer["steps_seen"] for answer in socket.answers] == list(range(1, 101))
