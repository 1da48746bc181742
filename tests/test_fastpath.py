"""The fast path answers exactly what the routes answer: same bodies, same errors, same metrics; and once it
started answering a request it never hands it to the route (which would apply a step a second time)."""

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from models.errors import StateUnknown
from models.serving.session_store import MemorySessionStore, SessionRecord

JSON = {"content-type": "application/json"}


@pytest.fixture
def pair(app_client: Callable[..., TestClient], trained_dir: Path) -> tuple[TestClient, TestClient]:
    """The trained models served twice: with the fast path (the default) and without it."""
    return app_client(trained_dir), app_client(trained_dir, fast_path=False)


PREDICT_BODIES = [
    '{"sequences": [[0.1, 0.5, 0.9], [0.3]]}',
    '{"sequences": [[0.1, 0.5]], "version": 1}',
    '{"sequences": [[' + ",".join(["0.2"] * 40) + ']], "truncate": "pre"}',
    '{"sequences": [[' + ",".join(["0.2"] * 40) + "]]}",  # too long: 422
    '{"sequences": [["x"]]}',
    '{"sequences": [[NaN]]}',
    '{"sequences": []}',
    '{"sequences": [[0.1]], "version": 9}',
    '{"sequences": [[0.1]], "extra": 1}',
    '{"sequences": [[0.1]',
    "[]",
]


@pytest.mark.parametrize("body", PREDICT_BODIES)
@pytest.mark.parametrize("model", ["m-lstm", "m-emb", "nope"])
def test_predict_answers_match_the_route(pair: tuple[TestClient, TestClient], body: str, model: str) -> None:
    fast, route = (client.post(f"/models/{model}/predict", content=body, headers=JSON) for client in pair)
    assert (fast.status_code, fast.json()) == (route.status_code, route.json())


def step_on_both(pair: tuple[TestClient, TestClient], sessions: list[str], body: str) -> list[tuple[int, Any]]:
    """``body`` stepped on each client's own session: each (status, body), its session id written ``<id>``."""
    answers = []
    for client, session_id in zip(pair, sessions, strict=True):
        response = client.post(f"/sessions/{session_id}/step", content=body, headers=JSON)
        answers.append((response.status_code, json.loads(response.text.replace(session_id, "<id>"))))
    return answers


def test_step_answers_match_the_route_and_failed_steps_change_nothing(pair: tuple[TestClient, TestClient]) -> None:
    # Float models take every number; token models refuse 0.5, 1.5 and ids beyond the vocabulary.
    for model, expected_steps in (("m-lstm", 6), ("m-emb", 3)):
        sessions = [client.post(f"/models/{model}/sessions").json()["session_id"] for client in pair]
        for body in ('{"values": [1, 2, 3]}', '{"values": [0.5]}', '{"values": []}', '{"values": ["a"]}',
                     '{"values": [1.5]}', '{"values": [100000]}', '{"values": [4]'):
            fast, route = step_on_both(pair, sessions, body)
            assert fast == route, body
        steps_seen = [c.get(f"/sessions/{s}").json()["steps_seen"] for c, s in zip(pair, sessions, strict=True)]
        assert steps_seen == [expected_steps, expected_steps]


def test_unknown_session_step_is_404_as_from_the_route(pair: tuple[TestClient, TestClient]) -> None:
    fast, route = (client.post("/sessions/nope/step", json={"values": [1.0]}) for client in pair)
    assert fast.status_code == route.status_code == 404 and fast.json() == route.json()


def test_bodies_without_content_length_or_json_type_go_to_the_route(pair: tuple[TestClient, TestClient]) -> None:
    fast = pair[0]

    def chunks() -> Iterator[bytes]:
        yield b'{"sequences": '
        yield b"[[0.1, 0.2]]}"

    chunked = fast.post("/models/m-lstm/predict", content=chunks(), headers=JSON)
    plain = fast.post("/models/m-lstm/predict", json={"sequences": [[0.1, 0.2]]})
    assert chunked.status_code == 200 and chunked.json() == plain.json()
    text = fast.post("/models/m-lstm/predict", content='{"sequences": [[0.1]]}', headers={"content-type": "text/plain"})
    assert text.status_code == 422 and text.json()["error"]["details"]["field"] == "body"


def test_fast_answers_are_counted_under_the_route_template(pair: tuple[TestClient, TestClient]) -> None:
    fast = pair[0]
    fast.post("/models/m-lstm/predict", json={"sequences": [[0.1], [0.2]]})
    metrics = fast.get("/metrics").text
    assert 'lstm_serve_http_requests_total{method="POST",route="/models/{name}/predict",status="200"} 1.0' in metrics
    assert 'lstm_serve_predicted_sequences_total{model="m-lstm"} 2.0' in metrics


def test_api_key_all_is_never_bypassed(app_client: Callable[..., TestClient], trained_dir: Path) -> None:
    client = app_client(trained_dir, api_key="k", api_key_all=True)
    assert client.post("/models/m-lstm/predict", json={"sequences": [[0.1]]}).status_code == 401
    ok = client.post("/models/m-lstm/predict", json={"sequences": [[0.1]]}, headers={"authorization": "Bearer k"})
    assert ok.status_code == 200


def test_step_seq_answers_match_the_route(pair: tuple[TestClient, TestClient]) -> None:
    sessions = [client.post("/models/m-lstm/sessions").json()["session_id"] for client in pair]
    for body in ('{"values": [1, 2], "seq": 0}', '{"values": [1, 2], "seq": 0}', '{"values": [3], "seq": 0}',
                 '{"values": [3], "seq": 9}', '{"values": [3], "seq": -1}', '{"values": [3], "seq": 2}'):
        fast, route = step_on_both(pair, sessions, body)
        assert fast == route, body
    assert [c.get(f"/sessions/{s}").json()["steps_seen"] for c, s in zip(pair, sessions, strict=True)] == [3, 3]


class SaveSentButUnconfirmed(MemorySessionStore):
    """Writes every save, then reports its outcome unknown: as a Redis whose acknowledgement came too late."""

    async def save(self, record: SessionRecord) -> SessionRecord:
        await super().save(record)
        raise StateUnknown("The save was sent; its acknowledgement did not come in time.")


@pytest.mark.parametrize("fast_path", [True, False])
def test_a_step_whose_save_was_sent_is_answered_from_that_outcome_never_applied_again(
    app_client: Callable[..., TestClient], trained_dir: Path, fast_path: bool
) -> None:
    client = app_client(trained_dir, fast_path=fast_path)
    client.app.state.sessions.store = SaveSentButUnconfirmed()
    session_id = client.post("/models/m-lstm/sessions").json()["session_id"]
    response = client.post(f"/sessions/{session_id}/step", content='{"values": [0.5]}', headers=JSON)
    assert response.status_code == 503
    assert response.json() == {"error": {
        "code": "state_unknown", "message": "The save was sent; its acknowledgement did not come in time.", "details": {}}}
    assert client.get(f"/sessions/{session_id}").json()["steps_seen"] == 1
    assert 'route="/sessions/{session_id}/step",status="503"} 1.0' in client.get("/metrics").text


class BrokenSave(MemorySessionStore):
    """A store whose save fails with an error nobody mapped: a bug, as the routes would meet it."""

    async def save(self, record: SessionRecord) -> SessionRecord:
        raise RuntimeError("disk on fire")


def test_an_unexpected_error_is_the_logged_500_in_the_error_format_and_counted(
    app_client: Callable[..., TestClient], trained_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The fast path runs in front of Starlette's error middleware: it must answer as the exception handlers do
    # (the route's own 500 is Starlette's, which re-raises into the test client).
    client = app_client(trained_dir)
    client.app.state.sessions.store = BrokenSave()
    session_id = client.post("/models/m-lstm/sessions").json()["session_id"]
    with caplog.at_level("ERROR"):
        response = client.post(f"/sessions/{session_id}/step", content='{"values": [0.5]}', headers=JSON)
    assert response.status_code == 500
    assert response.json() == {"error": {
        "code": "internal_error", "message": "An unexpected error occurred; it has been logged.", "details": {}}}
    assert any("disk on fire" in (r.exc_text or "") or "disk on fire" in str(r.exc_info) for r in caplog.records)
    assert 'route="/sessions/{session_id}/step",status="500"} 1.0' in client.get("/metrics").text
