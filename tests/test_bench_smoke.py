"""The benchmark's baseline servers answer like lstm-serve's predict route (shape, padding); nothing is timed."""

import asyncio
from pathlib import Path

import keras
import numpy as np
import pytest
from fastapi.testclient import TestClient

from bench import null_server, sessions_memory
from bench.naive_server import MODEL_PATH_ENV, create_app

MAX_LEN = 6


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, keras.Model]:
    """A tiny float LSTM saved as ``<dir>/3/model.keras`` (lstm-serve's layout: version 3)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(MAX_LEN, 1), name="sequence")
    outputs = keras.layers.Dense(1, activation="sigmoid")(keras.layers.LSTM(4)(inputs))
    model = keras.Model(inputs, outputs)
    path = tmp_path_factory.mktemp("bench-model") / "3" / "model.keras"
    path.parent.mkdir()
    model.save(path)
    return path, model


def test_naive_server_pads_and_predicts_like_keras(tiny_model: tuple[Path, keras.Model]) -> None:
    path, model = tiny_model
    sequences = [[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [0.9, -0.3], [1.0]]
    with TestClient(create_app(path)) as client:
        response = client.post("/models/tiny/predict", json={"sequences": sequences})
        assert client.get("/health/ready").status_code == 200
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "tiny"
    assert body["version"] == 3
    assert len(body["predictions"]) == 3
    padded = np.zeros((3, MAX_LEN, 1), dtype="float32")
    for i, seq in enumerate(sequences):
        padded[i, MAX_LEN - len(seq) :, 0] = seq
    expected = model(padded).numpy()[:, 0]
    for prediction, p in zip(body["predictions"], expected, strict=True):
        assert prediction["probability"] == pytest.approx(float(p), abs=1e-5)
        assert prediction["label"] == int(prediction["probability"] >= 0.5)


def test_naive_module_app_reads_the_model_path_from_the_environment(
    tiny_model: tuple[Path, keras.Model], monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench import naive_server

    monkeypatch.setenv(MODEL_PATH_ENV, str(tiny_model[0]))
    with TestClient(naive_server.app) as client:
        response = client.post("/models/m/predict", json={"sequences": [[0.5] * MAX_LEN]})
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"model", "version", "predictions"}


def test_null_server_answers_the_same_shape_without_a_model() -> None:
    with TestClient(null_server.app) as client:
        response = client.post("/models/demo/predict", json={"sequences": [[0.1] * 50, [0.2, 0.3]]})
        bad = client.post("/models/demo/predict", json={"sequences": "nope"})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"model", "version", "predictions"}
    assert body["model"] == "demo"
    assert [set(p) for p in body["predictions"]] == [{"probability", "label"}] * 2
    assert bad.status_code == 422


def test_sessions_memory_bench_holds_creates_and_steps_every_session(trained_dir: Path) -> None:
    """``bench/sessions_memory.py`` end to end at a tiny size (its own asserts check the last session was stepped)."""
    result = asyncio.run(sessions_memory.measure(trained_dir, count=300, chunk=100, probe=20, model="m-lstm"))
    assert result["sessions"] == 300
    assert set(result) == {
        "sessions", "bytes_per_session", "create_and_step_per_s", "step_p50_ms", "step_p99_ms", "reap_sweep_ms"
    }
    assert result["step_p99_ms"] >= result["step_p50_ms"] > 0
