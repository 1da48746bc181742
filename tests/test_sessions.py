"""Per-session LSTM state over HTTP, against both session stores (in-process and a real Redis).

Parity is checked three ways at every step: stepping through the API, the Keras stateful model of the
seed (batch shape (1, 1, 1), same weights) fed the same values, and ``/predict`` on the whole sequence.
"""

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import keras
import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient

from models.architectures import ArchParams, build_stateful_model, get_architecture
from models.inputs import to_step_input
from models.serving.batching import step_batch
from models.serving.model_index import ModelIndex
from models.serving.servable import read_version
from service.app import create_app
from tests.conftest import TRAINED, make_settings, train

REDIS_URL = "redis://127.0.0.1:6379/0"
SESSION_MODELS = [name for name, (arch, _) in TRAINED.items() if arch != "embedding_bilstm"]


@pytest.fixture(params=["memory", "redis"])
def store_settings(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """Settings selecting a session store; the Redis one gets a key prefix of its own, removed after."""
    if request.param == "memory":
        yield {"session_store": "memory"}
        return
    prefix = f"lstm-serve-test-{uuid.uuid4().hex}:"
    # A generous deadline: these tests check results under concurrency, not deadlines (tests/e2e/test_session_faults.py
    # does), and 200 concurrent in-process clients on this shared machine can keep the event loop busy past the default.
    yield {"session_store": REDIS_URL, "session_key_prefix": prefix, "session_store_timeout_s": 5.0}
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{prefix}*"))
    if keys:
        client.delete(*keys)


@pytest.fixture
def served(app_client: Callable[..., TestClient], trained_dir: Path, store_settings: dict[str, Any]) -> TestClient:
    """The trained models, served with the selected session store."""
    return app_client(trained_dir, **store_settings)


def random_sequence(meta: dict[str, Any], seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    if meta["input_kind"] == "tokens":
        return rng.integers(0, meta["params"]["vocab_size"], meta["max_len"]).tolist()
    return rng.normal(0.0, 1.0, meta["max_len"]).round(4).tolist()


def keras_stateful_probabilities(model_dir: Path, meta: dict[str, Any], values: list[float]) -> list[float]:
    """The seed's way: a stateful model with batch shape (1, 1, 1) and the saved weights, one value per call."""
    arch = get_architecture(meta["architecture"])
    saved = keras.models.load_model(model_dir / meta["name"] / str(meta["version"]) / "model.keras", safe_mode=True)
    reference = build_stateful_model(arch, ArchParams(**meta["params"]))
    reference.set_weights(saved.get_weights())
    dtype = np.int32 if arch.input_kind == "tokens" else np.float32
    shape = (1, 1) if arch.input_kind == "tokens" else (1, 1, 1)
    return [float(np.asarray(reference(np.full(shape, v, dtype)))[0, 0]) for v in values]


def start(client: TestClient, model: str, **body: Any) -> dict[str, Any]:
    response = client.post(f"/models/{model}/sessions", json=body or None)
    assert response.status_code == 201, response.text
    return response.json()


def step(client: TestClient, session_id: str, values: list[float]) -> dict[str, Any]:
    response = client.post(f"/sessions/{session_id}/step", json={"values": values})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("model", SESSION_MODELS)
def test_stepping_matches_keras_stateful_model_and_predict(served: TestClient, trained_dir: Path, model: str) -> None:
    meta = served.get(f"/models/{model}").json()
    values = random_sequence(meta, seed=7)
    session = start(served, model)
    assert session["steps_seen"] == 0 and session["version"] == meta["version"]

    stepped = [step(served, session["session_id"], [v])["probability"] for v in values]

    expected = keras_stateful_probabilities(trained_dir, meta, values)
    np.testing.assert_allclose(stepped, expected, atol=1e-5)
    predicted = served.post(f"/models/{model}/predict", json={"sequences": [values]}).json()
    assert abs(predicted["predictions"][0]["probability"] - stepped[-1]) <= 1e-5
    assert served.get(f"/sessions/{session['session_id']}").json()["steps_seen"] == len(values)


@pytest.mark.parametrize("model", ["m-lstm", "m-emb"])
def test_chunked_steps_equal_single_steps(served: TestClient, model: str) -> None:
    meta = served.get(f"/models/{model}").json()
    values = random_sequence(meta, seed=3)
    single = start(served, model)["session_id"]
    chunked = start(served, model)["session_id"]
    one_by_one = [step(served, single, [v])["probability"] for v in values]
    in_chunks: list[float] = []
    for chunk in (values[:1], values[1:6], values[6:]):
        result = step(served, chunked, chunk)
        assert len(result["probabilities"]) == len(chunk)
        assert result["probability"] == result["probabilities"][-1]
        in_chunks += result["probabilities"]
    assert result["steps_seen"] == len(values)
    np.testing.assert_allclose(in_chunks, one_by_one, atol=1e-6)


def test_reset_returns_to_zero_state(served: TestClient) -> None:
    session_id = start(served, "m-lstm")["session_id"]
    first = step(served, session_id, [0.5, -1.0, 2.0])["probabilities"]
    reset = served.post(f"/sessions/{session_id}/reset")
    assert reset.status_code == 200 and reset.json()["steps_seen"] == 0
    again = step(served, session_id, [0.5, -1.0, 2.0])
    assert again["probabilities"] == pytest.approx(first, abs=1e-7)
    assert again["steps_seen"] == 3


def test_sessions_are_isolated(served: TestClient) -> None:
    a = start(served, "m-lstm")["session_id"]
    b = start(served, "m-lstm")["session_id"]
    before = step(served, b, [0.3])["probability"]
    step(served, a, [5.0, 5.0, 5.0])
    fresh = start(served, "m-lstm")["session_id"]
    assert step(served, fresh, [0.3])["probability"] == pytest.approx(before, abs=1e-7)
    assert served.get(f"/sessions/{b}").json()["steps_seen"] == 1


def test_bidirectional_model_refuses_sessions(served: TestClient) -> None:
    response = served.post("/models/m-bi/sessions")
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "sessions_unsupported"
    assert "whole sequence" in error["message"]


def test_unknown_and_deleted_sessions_are_404(served: TestClient) -> None:
    assert served.post("/sessions/nope/step", json={"values": [1.0]}).json()["error"]["code"] == "session_not_found"
    session_id = start(served, "m-lstm")["session_id"]
    assert served.delete(f"/sessions/{session_id}").status_code == 204
    for response in (
        served.get(f"/sessions/{session_id}"),
        served.post(f"/sessions/{session_id}/step", json={"values": [1.0]}),
        served.post(f"/sessions/{session_id}/reset"),
        served.delete(f"/sessions/{session_id}"),
    ):
        assert response.status_code == 404


def test_session_ids_are_unguessable(served: TestClient) -> None:
    ids = {start(served, "m-lstm")["session_id"] for _ in range(20)}
    assert len(ids) == 20 and all(len(i) >= 20 for i in ids)


def test_ttl_expiry_gives_404(served: TestClient) -> None:
    session = start(served, "m-lstm", ttl_s=1)
    step(served, session["session_id"], [0.1])
    time.sleep(1.3)
    response = served.post(f"/sessions/{session['session_id']}/step", json={"values": [0.1]})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "session_not_found"


def test_sliding_expiry_extends_on_use(served: TestClient) -> None:
    session = start(served, "m-lstm", ttl_s=2)
    for _ in range(3):
        time.sleep(0.8)
        step(served, session["session_id"], [0.1])
    assert served.get(f"/sessions/{session['session_id']}").json()["steps_seen"] == 3


def test_max_sessions_gives_429(app_client: Callable[..., TestClient], trained_dir: Path, store_settings: dict[str, Any]) -> None:
    client = app_client(trained_dir, max_sessions=3, **store_settings)
    ids = [start(client, "m-lstm")["session_id"] for _ in range(3)]
    response = client.post("/models/m-lstm/sessions")
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "capacity_exceeded"
    client.delete(f"/sessions/{ids[0]}")
    assert client.post("/models/m-lstm/sessions").status_code == 201


def test_step_validation(served: TestClient) -> None:
    float_session = start(served, "m-lstm")["session_id"]
    token_session = start(served, "m-emb")["session_id"]
    cases = [
        (float_session, {"values": []}, "values"),
        (float_session, {"values": ["x"]}, "values[0]"),
        (token_session, {"values": [1, 2.5]}, "values[1]"),
        (token_session, {"values": [1, 10_000]}, "values[1]"),
        (token_session, {"values": [-1]}, "values[0]"),
    ]
    for session_id, body, field in cases:
        response = served.post(f"/sessions/{session_id}/step", json=body)
        assert response.status_code == 422, body
        assert response.json()["error"]["details"]["field"] == field
    # A rejected step changes nothing.
    assert served.get(f"/sessions/{token_session}").json()["steps_seen"] == 0


def test_concurrent_sessions_match_sequential_results(trained_dir: Path, store_settings: dict[str, Any]) -> None:
    """200 sessions stepped concurrently, interleaved, each equal to its own sequential run."""
    rng = np.random.default_rng(0)
    sequences = rng.normal(0.0, 1.0, (200, 8)).round(4).tolist()

    async def run() -> tuple[list[list[float]], list[float]]:
        app = create_app(make_settings(trained_dir, **store_settings))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                created = await asyncio.gather(*(http.post("/models/m-lstm/sessions") for _ in sequences))
                ids = [r.json()["session_id"] for r in created]

                async def drive(session_id: str, values: list[float]) -> list[float]:
                    out = []
                    for value in values:
                        response = await http.post(f"/sessions/{session_id}/step", json={"values": [value]})
                        out.append(response.json()["probability"])
                    return out

                stepped = await asyncio.gather(*(drive(i, s) for i, s in zip(ids, sequences)))
                whole = await http.post("/models/m-lstm/predict", json={"sequences": sequences})
                return stepped, [p["probability"] for p in whole.json()["predictions"]]

    stepped, _ = asyncio.run(run())
    # Sequential reference: the same values stepped alone, one session at a time, in a fresh app.
    with TestClient(create_app(make_settings(trained_dir))) as client:
        for values, got in list(zip(sequences, stepped))[:: 20]:
            session_id = start(client, "m-lstm")["session_id"]
            expected = [step(client, session_id, [v])["probability"] for v in values]
            np.testing.assert_allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize("model", ["m-lstm", "m-emb"])
def test_a_batch_of_sessions_steps_as_each_session_would_alone(trained_dir: Path, model: str) -> None:
    """Sessions batched with equal and with unequal numbers of values, from the zero state and from a later
    one, get the outputs and states each gets stepped alone (the lone path, checked against Keras above)."""
    index = ModelIndex(trained_dir)  # read-only: no open(), which would sweep the folder
    servable = read_version(index.folder(index.meta(model)))
    params, rng = servable.params, np.random.default_rng(3)

    def values(n: int) -> np.ndarray:
        raw = rng.integers(1, params.vocab_size, n) if params.vocab_size else rng.normal(0.0, 1.0, n).round(4)
        return to_step_input(raw.tolist(), input_kind=servable.architecture.input_kind,
                             vocab_size=params.vocab_size, n_features=params.n_features)

    zero = servable.zero_state(1)
    later = step_batch(servable, [(values(3), *zero)])[0][1:]
    for lengths in ([2, 2, 2], [1, 3, 2]):
        items = [(values(n), *state) for n, state in zip(lengths, [zero, later, zero], strict=True)]
        for item, batched in zip(items, step_batch(servable, items), strict=True):
            alone = step_batch(servable, [item])[0]
            assert batched[0].shape == alone[0].shape == (len(item[0]), params.output_width)
            for got, expected in zip(batched, alone, strict=True):  # outputs, h, c
                np.testing.assert_allclose(got, expected, atol=1e-6)


def test_concurrent_steps_on_one_session_are_serialized(trained_dir: Path, store_settings: dict[str, Any]) -> None:
    async def run() -> dict[str, Any]:
        app = create_app(make_settings(trained_dir, **store_settings))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                session_id = (await http.post("/models/m-lstm/sessions")).json()["session_id"]
                await asyncio.gather(
                    *(http.post(f"/sessions/{session_id}/step", json={"values": [0.1, 0.2]}) for _ in range(50))
                )
                return (await http.get(f"/sessions/{session_id}")).json()

    assert asyncio.run(run())["steps_seen"] == 100


def test_session_survives_retraining_and_fails_cleanly_after_delete(app_client: Callable[..., TestClient], store_settings: dict[str, Any]) -> None:
    client = app_client(**store_settings)
    train(client, "r", architecture="lstm", data={"sequences": [[0.1, 0.2, 0.3], [0.9, 0.1]] * 4, "labels": [0, 1] * 4}, epochs=1)
    session = start(client, "r")
    first = step(client, session["session_id"], [0.5])
    train(client, "r", architecture="lstm", data={"sequences": [[0.1, 0.2, 0.3], [0.9, 0.1]] * 4, "labels": [1, 0] * 4}, epochs=3, seed=5)
    assert client.get("/models/r").json()["version"] == 2
    after = step(client, session["session_id"], [0.5])
    assert after["steps_seen"] == 2
    reference = start(client, "r", version=1)
    assert reference["version"] == 1
    expected = step(client, reference["session_id"], [0.5, 0.5])["probability"]
    assert after["probability"] == pytest.approx(expected, abs=1e-7)
    assert client.delete("/models/r").status_code == 204
    gone = client.post(f"/sessions/{session['session_id']}/step", json={"values": [0.5]})
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "model_deleted"
    assert first["steps_seen"] == 1
    # A new model under the same name (other units) is another model: the old session stays ended.
    train(client, "r", architecture="lstm", params={"units": 3}, data={"sequences": [[0.1, 0.2]] * 4, "labels": [0, 1] * 2}, epochs=1)
    for response in (
        client.post(f"/sessions/{session['session_id']}/step", json={"values": [0.5]}),
        client.post(f"/sessions/{session['session_id']}/step", json={"values": [0.5], "seq": 2}),
        client.post(f"/sessions/{session['session_id']}/reset"),
    ):
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == "model_deleted"
        assert response.json()["error"]["details"] == {"session_id": session["session_id"], "model": "r", "version": 1}
    assert client.get(f"/sessions/{session['session_id']}").json()["steps_seen"] == 2


def test_seq_applies_the_next_step_replays_the_last_and_refuses_others(served: TestClient) -> None:
    session_id = start(served, "m-lstm")["session_id"]
    reference = start(served, "m-lstm")["session_id"]
    url = f"/sessions/{session_id}/step"

    first = served.post(url, json={"values": [0.1, 0.2], "seq": 0})
    assert first.status_code == 200 and first.json()["steps_seen"] == 2
    again = served.post(url, json={"values": [0.1, 0.2], "seq": 0})
    assert (again.status_code, again.json()) == (200, first.json())  # answered again, not applied again
    assert served.get(f"/sessions/{session_id}").json()["steps_seen"] == 2

    for body, got in (({"values": [0.9], "seq": 0}, 0), ({"values": [0.1, 0.2], "seq": 1}, 1), ({"values": [0.3], "seq": 7}, 7)):
        response = served.post(url, json=body)
        assert response.status_code == 409, body
        error = response.json()["error"]
        assert error["code"] == "step_out_of_order"
        assert error["details"] == {"session_id": session_id, "field": "seq", "expected": 2, "got": got}

    second = served.post(url, json={"values": [0.3], "seq": 2}).json()
    assert second["steps_seen"] == 3
    expected = step(served, reference, [0.1, 0.2, 0.3])["probabilities"]
    assert first.json()["probabilities"] + second["probabilities"] == pytest.approx(expected, abs=1e-6)
    # Only the last applied step can be answered again.
    assert served.post(url, json={"values": [0.1, 0.2], "seq": 0}).json()["error"]["details"]["expected"] == 3
    # A step without seq is recorded as the last step too: a retry of it with its seq is answered again.
    plain = step(served, session_id, [0.4])
    assert served.post(url, json={"values": [0.4], "seq": 3}).json() == plain
    assert served.get(f"/sessions/{session_id}").json()["steps_seen"] == 4
    # After a reset the session starts over at seq 0, and earlier steps cannot be answered again.
    assert served.post(f"/sessions/{session_id}/reset").status_code == 200
    assert served.post(url, json={"values": [0.4], "seq": 3}).json()["error"]["details"]["expected"] == 0
    restarted = served.post(url, json={"values": [0.1, 0.2], "seq": 0}).json()
    assert restarted == first.json()


def test_replayed_steps_are_not_counted_as_steps(served: TestClient) -> None:
    session_id = start(served, "m-td")["session_id"]
    for _ in range(3):
        assert served.post(f"/sessions/{session_id}/step", json={"values": [0.5, 0.6], "seq": 0}).status_code == 200
    assert 'lstm_serve_session_steps_total{model="m-td"} 2.0' in served.get("/metrics").text


def test_seq_validation(served: TestClient) -> None:
    session_id = start(served, "m-lstm")["session_id"]
    for seq in (-1, "0", 1.5, True):
        response = served.post(f"/sessions/{session_id}/step", json={"values": [0.1], "seq": seq})
        assert response.status_code == 422, seq
        assert response.json()["error"]["details"]["field"] == "seq"
    assert served.get(f"/sessions/{session_id}").json()["steps_seen"] == 0
