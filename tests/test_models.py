"""Models as resources: upload (.keras), list, describe and delete."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import keras
import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.conftest import TRAINED

TOLERANCE = 1e-5


def save(model: keras.Model, folder: Path, name: str = "model.keras") -> bytes:
    path = folder / name
    model.save(path)
    return path.read_bytes()


def upload(client: TestClient, name: str, content: bytes, **form: Any) -> httpx.Response:
    data = {key: str(value) for key, value in form.items()}
    return client.post(
        f"/models/{name}/load", files={"file": ("model.keras", content, "application/octet-stream")}, data=data
    )


def service_probabilities(client: TestClient, name: str, x: np.ndarray, **extra: Any) -> np.ndarray:
    response = client.post(f"/models/{name}/predict", json={"sequences": x.tolist(), **extra})
    assert response.status_code == 200, response.text
    return np.array([p["probability"] for p in response.json()["predictions"]])


# --- models a user might have built with Keras ---------------------------------------------------


def lstm_model() -> keras.Model:
    inputs = keras.Input((7, 1))
    x = keras.layers.LSTM(4)(inputs)
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))


def td_dense_model() -> keras.Model:
    inputs = keras.Input((6, 1))
    x = keras.layers.TimeDistributed(keras.layers.Dense(5))(inputs)
    x = keras.layers.LSTM(3)(x)
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))


def embedding_model() -> keras.Model:
    inputs = keras.Input((9,), dtype="int32")
    x = keras.layers.Embedding(20, 4)(inputs)
    x = keras.layers.LSTM(3)(x)
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))


def bilstm_model() -> keras.Model:
    # Sequential, as many users write it; the service must identify it just the same.
    return keras.Sequential(
        [
            keras.Input((8,), dtype="int32"),
            keras.layers.Embedding(15, 3),
            keras.layers.Bidirectional(keras.layers.LSTM(2)),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )


def stateful_model(units: int = 4) -> keras.Model:
    """The seed's stateful model."""
    inputs = keras.Input(batch_shape=(1, 1, 1))
    x = keras.layers.LSTM(units, stateful=True)(inputs)
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))


BUILDERS: dict[str, tuple[Callable[[], keras.Model], dict[str, int]]] = {
    "lstm": (lstm_model, {"max_len": 7, "units": 4}),
    "td_dense_lstm": (td_dense_model, {"max_len": 6, "units": 3, "dense_units": 5}),
    "embedding_lstm": (embedding_model, {"max_len": 9, "units": 3, "vocab_size": 20, "embedding_dim": 4}),
    "embedding_bilstm": (bilstm_model, {"max_len": 8, "units": 2, "vocab_size": 15, "embedding_dim": 3}),
}


def randomize(model: keras.Model, seed: int) -> None:
    """Weights far from the initializer's, so a wrong mapping of weights shows up in the outputs."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0.0, 0.7, w.shape).astype(w.dtype) for w in model.get_weights()])


@pytest.mark.parametrize("arch", list(BUILDERS))
def test_upload_keras_model_predicts_like_keras(client: TestClient, tmp_path: Path, arch: str) -> None:
    keras.utils.set_random_seed(0)
    build, params = BUILDERS[arch]
    model = build()
    randomize(model, seed=1)
    response = upload(client, "uploaded", save(model, tmp_path))
    assert response.status_code == 201, response.text
    meta = response.json()
    assert meta["name"] == "uploaded"
    assert meta["architecture"] == arch
    assert meta["params"] == params
    assert meta["max_len"] == params["max_len"]
    assert meta["version"] == 1
    assert meta["versions"] == [1]
    assert meta["source"] == "upload"
    assert meta["metrics"] == {}
    assert meta["input_kind"] == ("tokens" if "vocab_size" in params else "float")
    assert client.get("/models/uploaded").json() == meta

    rng = np.random.default_rng(2)
    n, max_len = 6, params["max_len"]
    if "vocab_size" in params:
        x = rng.integers(0, params["vocab_size"], (n, max_len)).astype(np.int32)
        expected = np.asarray(model(x)).reshape(-1)
    else:
        x = rng.normal(0.0, 1.0, (n, max_len)).astype(np.float32)
        expected = np.asarray(model(x[:, :, None])).reshape(-1)
    got = service_probabilities(client, "uploaded", x)
    np.testing.assert_allclose(got, expected, atol=TOLERANCE)
    assert np.ptp(expected) > 1e-3  # the comparison means something: outputs differ between inputs


def test_upload_declared_architecture_matches(client: TestClient, tmp_path: Path) -> None:
    response = upload(client, "declared", save(lstm_model(), tmp_path), architecture="lstm")
    assert response.status_code == 201, response.text
    assert response.json()["architecture"] == "lstm"


def test_upload_seed_stateful_model(client: TestClient, tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    model = stateful_model()
    randomize(model, seed=3)
    content = save(model, tmp_path)

    # Its input has no time dimension: without max_len the service cannot know the sequence length.
    response = upload(client, "seed", content)
    assert response.status_code == 422
    assert response.json()["error"]["details"]["field"] == "max_len"

    response = upload(client, "seed", content, max_len=6)
    assert response.status_code == 201, response.text
    meta = response.json()
    assert meta["architecture"] == "stateful_lstm"
    assert meta["params"] == {"max_len": 6, "units": 4}
    assert meta["input_kind"] == "float"

    sequences = np.random.default_rng(4).normal(0.0, 1.0, (3, 6)).astype(np.float32)
    expected = []
    for sequence in sequences:
        for layer in model.layers:
            if getattr(layer, "stateful", False):
                layer.reset_state()
        for value in sequence:
            last = model(np.array([[[value]]], np.float32))
        expected.append(float(np.asarray(last)[0, 0]))
    np.testing.assert_allclose(service_probabilities(client, "seed", sequences), expected, atol=TOLERANCE)
    # Ragged input is pre-padded: two steps equal six with four leading zeros.
    short = sequences[:, -2:]
    padded = np.concatenate([np.zeros((3, 4), np.float32), short], axis=1)
    np.testing.assert_allclose(
        service_probabilities(client, "seed", short), service_probabilities(client, "seed", padded), atol=0
    )


def test_upload_model_without_a_fixed_length(client: TestClient, tmp_path: Path) -> None:
    inputs = keras.Input((None, 1))
    x = keras.layers.LSTM(3)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
    randomize(model, seed=9)
    content = save(model, tmp_path)
    response = upload(client, "free", content)
    assert response.status_code == 422
    assert response.json()["error"]["details"]["field"] == "max_len"
    response = upload(client, "free", content, max_len=0)
    assert response.status_code == 422
    assert response.json()["error"]["details"]["field"] == "max_len"
    response = upload(client, "free", content, max_len=5)
    assert response.status_code == 201, response.text
    assert response.json()["params"] == {"max_len": 5, "units": 3}
    x = np.random.default_rng(10).normal(size=(3, 5)).astype(np.float32)
    np.testing.assert_allclose(service_probabilities(client, "free", x), np.asarray(model(x[:, :, None])).reshape(-1),
                               atol=TOLERANCE)


def test_upload_invalid_name(client: TestClient, tmp_path: Path) -> None:
    response = upload(client, "Bad-Name", save(lstm_model(), tmp_path))
    assert response.status_code == 422
    assert response.json()["error"]["details"]["field"] == "name"


def test_upload_second_file_is_version_2(client: TestClient, tmp_path: Path) -> None:
    first, second = lstm_model(), lstm_model()
    randomize(first, seed=5)
    randomize(second, seed=6)
    assert upload(client, "twice", save(first, tmp_path, "a.keras")).status_code == 201
    response = upload(client, "twice", save(second, tmp_path, "b.keras"))
    assert response.status_code == 201
    assert response.json()["version"] == 2
    assert response.json()["versions"] == [1, 2]
    x = np.random.default_rng(7).normal(size=(4, 7)).astype(np.float32)
    np.testing.assert_allclose(service_probabilities(client, "twice", x, version=1),
                               np.asarray(first(x[:, :, None])).reshape(-1), atol=TOLERANCE)
    np.testing.assert_allclose(service_probabilities(client, "twice", x),
                               np.asarray(second(x[:, :, None])).reshape(-1), atol=TOLERANCE)


def test_upload_max_len_that_contradicts_the_model(client: TestClient, tmp_path: Path) -> None:
    response = upload(client, "wrong", save(lstm_model(), tmp_path), max_len=9)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["details"]["field"] == "max_len"
    assert error["details"]["expected"] == 7


def test_upload_unsupported_layers(client: TestClient, tmp_path: Path) -> None:
    inputs = keras.Input((5, 1))
    x = keras.layers.GRU(3)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
    response = upload(client, "gru", save(model, tmp_path))
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_model_file"
    assert error["details"]["field"] == "file"
    assert "GRU" in error["details"]["got"]


def test_upload_with_a_different_activation_is_refused(client: TestClient, tmp_path: Path) -> None:
    inputs = keras.Input((5, 1))
    x = keras.layers.LSTM(3)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="tanh")(x))
    randomize(model, seed=8)
    response = upload(client, "tanh", save(model, tmp_path))
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_model_file"
    assert client.get("/models/tanh").status_code == 404


def test_list_models(trained: TestClient) -> None:
    response = trained.get("/models")
    assert response.status_code == 200
    models = response.json()
    assert [m["name"] for m in models] == sorted(TRAINED)
    for m in models:
        assert m["architecture"] == TRAINED[m["name"]][0]
        assert m["version"] == 1
        assert m == trained.get(f"/models/{m['name']}").json()


def test_list_models_empty(client: TestClient) -> None:
    assert client.get("/models").json() == []


def test_delete_model(client: TestClient, tmp_path: Path) -> None:
    content = save(lstm_model(), tmp_path)
    assert upload(client, "doomed", content).status_code == 201
    assert upload(client, "kept", content).status_code == 201
    assert [m["name"] for m in client.get("/models").json()] == ["doomed", "kept"]

    response = client.delete("/models/doomed")
    assert response.status_code == 204
    assert response.content == b""
    assert client.get("/models/doomed").json()["error"]["code"] == "model_not_found"
    assert client.get("/models/doomed").status_code == 404
    assert client.post("/models/doomed/predict", json={"sequences": [[0.1]]}).status_code == 404
    assert client.post("/models/doomed/predict", json={"sequences": [[0.1]], "version": 1}).status_code == 404
    assert client.delete("/models/doomed").status_code == 404
    assert [m["name"] for m in client.get("/models").json()] == ["kept"]
    assert client.post("/models/kept/predict", json={"sequences": [[0.1]]}).status_code == 200

    # The name is free again and starts over at version 1.
    response = upload(client, "doomed", content)
    assert response.status_code == 201
    assert response.json()["versions"] == [1]
