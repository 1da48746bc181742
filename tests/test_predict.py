"""POST /models/{name}/predict: padding, truncation, order, versions, on the shared trained models."""

from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.conftest import TRAINED

MAX_LEN = 30  # every model of ``trained`` was trained on a 30-step dataset
TOKEN_NAMES = [name for name, (arch, _) in TRAINED.items() if arch.startswith("embedding")]


def sample_sequences(name: str, lengths: list[int], seed: int = 0) -> list[list[float]]:
    """Random sequences of the given lengths: token ids 1..49 for token models, floats otherwise."""
    rng = np.random.default_rng(seed)
    if name in TOKEN_NAMES:
        return [rng.integers(1, 50, n).tolist() for n in lengths]
    return [np.round(rng.normal(0.0, 1.0, n), 4).tolist() for n in lengths]


def probabilities(client: TestClient, name: str, sequences: list[list[float]], **extra: Any) -> list[float]:
    response = client.post(f"/models/{name}/predict", json={"sequences": sequences, **extra})
    assert response.status_code == 200, response.text
    return [p["probability"] for p in response.json()["predictions"]]


@pytest.mark.parametrize("name", list(TRAINED))
def test_ragged_equals_explicitly_prepadded(trained: TestClient, name: str) -> None:
    ragged = sample_sequences(name, [1, 5, 17, MAX_LEN])
    padded = [[0] * (MAX_LEN - len(s)) + s for s in ragged]
    assert all(len(s) == MAX_LEN for s in padded)
    assert probabilities(trained, name, ragged) == probabilities(trained, name, padded)


@pytest.mark.parametrize("name", list(TRAINED))
def test_padding_is_at_the_front_not_the_back(trained: TestClient, name: str) -> None:
    (seq,) = sample_sequences(name, [10], seed=4)
    pre = probabilities(trained, name, [[0] * (MAX_LEN - 10) + seq])[0]
    post = probabilities(trained, name, [seq + [0] * (MAX_LEN - 10)])[0]
    assert probabilities(trained, name, [seq])[0] == pre
    assert pre != post  # the two paddings differ for any trained LSTM; only pre-padding matches


@pytest.mark.parametrize("name", list(TRAINED))
def test_too_long_is_422_naming_the_field(trained: TestClient, name: str) -> None:
    sequences = sample_sequences(name, [3, MAX_LEN + 1])
    response = trained.post(f"/models/{name}/predict", json={"sequences": sequences})
    assert response.status_code == 422
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details"}
    assert error["code"] == "invalid_input"
    assert error["details"]["field"] == "sequences[1]"
    assert error["details"]["got"] == MAX_LEN + 1
    assert "truncate" in error["message"]


@pytest.mark.parametrize("name", list(TRAINED))
def test_truncate_pre_keeps_the_last_steps(trained: TestClient, name: str) -> None:
    long = sample_sequences(name, [MAX_LEN + 7, MAX_LEN + 1], seed=1)
    cut = probabilities(trained, name, long, truncate="pre")
    assert cut == probabilities(trained, name, [s[-MAX_LEN:] for s in long])


@pytest.mark.parametrize("name", list(TRAINED))
def test_truncate_post_keeps_the_first_steps(trained: TestClient, name: str) -> None:
    long = sample_sequences(name, [MAX_LEN + 7, MAX_LEN + 1], seed=2)
    cut = probabilities(trained, name, long, truncate="post")
    assert cut == probabilities(trained, name, [s[:MAX_LEN] for s in long])
    assert cut != probabilities(trained, name, long, truncate="pre")


def test_truncate_leaves_short_sequences_alone(trained: TestClient) -> None:
    short = sample_sequences("m-lstm", [4, 12], seed=3)
    plain = probabilities(trained, "m-lstm", short)
    assert probabilities(trained, "m-lstm", short, truncate="pre") == plain
    assert probabilities(trained, "m-lstm", short, truncate="post") == plain


def test_truncate_must_be_pre_or_post(trained: TestClient) -> None:
    response = trained.post("/models/m-lstm/predict", json={"sequences": [[0.1]], "truncate": "middle"})
    assert response.status_code == 422
    assert response.json()["error"]["details"]["field"] == "truncate"


def test_integers_are_accepted_for_float_models(trained: TestClient) -> None:
    assert probabilities(trained, "m-lstm", [[1, 0, -1]]) == probabilities(trained, "m-lstm", [[1.0, 0.0, -1.0]])


def test_response_shape_labels_and_order(trained: TestClient) -> None:
    sequences = sample_sequences("m-td", [2, 30, 9, 1, 14], seed=5)
    response = trained.post("/models/m-td/predict", json={"sequences": sequences})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"model", "version", "predictions"}
    assert body["model"] == "m-td"
    assert body["version"] == 1
    assert len(body["predictions"]) == len(sequences)
    for i, prediction in enumerate(body["predictions"]):
        assert 0.0 <= prediction["probability"] <= 1.0
        assert prediction["label"] == int(prediction["probability"] >= 0.5)
        assert prediction["probability"] == probabilities(trained, "m-td", [sequences[i]])[0]


def test_trained_models_learned_something(trained: TestClient) -> None:
    # A clear upward trend versus a clear downward one: the noisy_trend models must order them right.
    up = np.linspace(-1.5, 1.5, MAX_LEN).round(4).tolist()
    down = up[::-1]
    for name in ("m-lstm", "m-stateful", "m-td"):
        p_up, p_down = probabilities(trained, name, [up, down])
        assert p_up > p_down, name


def test_version_pinning_on_a_single_version_model(trained: TestClient) -> None:
    seqs = sample_sequences("m-emb", [5])
    assert probabilities(trained, "m-emb", seqs, version=1) == probabilities(trained, "m-emb", seqs)
    response = trained.post("/models/m-emb/predict", json={"sequences": seqs, "version": 2})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "version_not_found"
    zero = trained.post("/models/m-emb/predict", json={"sequences": seqs, "version": 0})
    assert zero.status_code == 422
    assert zero.json()["error"]["details"]["field"] == "version"


def test_unknown_model_is_404(trained: TestClient) -> None:
    response = trained.post("/models/nope/predict", json={"sequences": [[0.1]]})
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "model_not_found"
    assert "nope" in error["message"]
    assert error["details"]["model"] == "nope"
