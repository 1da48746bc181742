"""POST /models/{name}/train: every architecture on built-in and on user data, defaults, versions."""

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import SMALL_PARAMS, TRAINED, train, wait_for_job

ARCH_OF = {name: arch for name, (arch, _) in TRAINED.items()}
METRIC_KEYS = {"loss", "accuracy", "val_loss", "val_accuracy"}

#: Small ragged user data: 8 float sequences of 3..6 steps, label = "ends higher than it starts".
FLOAT_DATA = {
    "sequences": [
        [0.1, 0.4, 0.9],
        [0.9, 0.5, 0.1, -0.2],
        [-0.5, 0.0, 0.5, 1.0, 1.5],
        [1.0, 0.8, 0.2],
        [0.0, 0.3, 0.6, 0.9, 1.2, 1.5],
        [0.7, 0.1],
        [0.2, 0.5, 0.8, 0.6],
        [1.2, 0.9, 0.4, 0.0, -0.3],
    ],
    "labels": [1, 0, 1, 0, 1, 0, 1, 0],
}
#: Small ragged token data: label 1 when the token 3 occurs.
TOKEN_DATA = {
    "sequences": [[1, 3, 5], [2, 4], [6, 3, 7, 2, 1], [5, 6, 7, 8], [3], [9, 8, 7, 6, 5, 4], [4, 3, 2], [1, 1]],
    "labels": [1, 0, 1, 0, 1, 0, 1, 0],
}
TINY_PARAMS = {"units": 4, "embedding_dim": 4, "dense_units": 4, "vocab_size": 12}
RELEVANT = {
    "lstm": {"units"},
    "stateful_lstm": {"units"},
    "td_dense_lstm": {"units", "dense_units"},
    "embedding_lstm": {"units", "vocab_size", "embedding_dim"},
    "embedding_bilstm": {"units", "vocab_size", "embedding_dim"},
}
TOKEN_ARCHS = {"embedding_lstm", "embedding_bilstm"}


def predict(client: TestClient, name: str, sequences: list[list[float]], **extra: Any) -> dict[str, Any]:
    response = client.post(f"/models/{name}/predict", json={"sequences": sequences, **extra})
    assert response.status_code == 200, response.text
    return response.json()


def assert_predictions_well_formed(body: dict[str, Any], n: int) -> list[float]:
    predictions = body["predictions"]
    assert len(predictions) == n
    for p in predictions:
        assert set(p) == {"probability", "label"}
        assert 0.0 <= p["probability"] <= 1.0
        assert p["label"] == int(p["probability"] >= 0.5)
    return [p["probability"] for p in predictions]


@pytest.mark.parametrize("name", list(TRAINED))
def test_builtin_dataset_training_metadata(trained: TestClient, name: str) -> None:
    arch, dataset = TRAINED[name]
    response = trained.get(f"/models/{name}")
    assert response.status_code == 200
    meta = response.json()
    assert meta["name"] == name
    assert meta["architecture"] == arch
    assert meta["version"] == 1
    assert meta["versions"] == [1]
    assert meta["input_kind"] == ("tokens" if arch in TOKEN_ARCHS else "float")
    assert meta["max_len"] == 30  # both noisy_trend and token_pattern are 30 steps long
    expected = {"max_len": 30, **{k: SMALL_PARAMS.get(k, 100) for k in RELEVANT[arch]}}
    assert meta["params"] == expected  # vocab_size stays at its default 100
    assert set(meta["metrics"]) == METRIC_KEYS
    for key, value in meta["metrics"].items():
        assert value >= 0.0, key
    assert 0.0 <= meta["metrics"]["accuracy"] <= 1.0
    assert meta["source"] == f"dataset:{dataset}"
    assert meta["created_at"]


@pytest.mark.parametrize("name", list(TRAINED))
def test_builtin_model_predicts_in_order(trained: TestClient, name: str) -> None:
    arch = ARCH_OF[name]
    if arch in TOKEN_ARCHS:
        sequences = [[3, 7, 1, 2], [5, 5, 5], [1, 2, 3, 7, 9, 9, 9], [40]]
    else:
        sequences = [[-1.0, -0.5, 0.0, 0.5, 1.0], [1.0, 0.5, 0.0, -0.5, -1.0], [0.2], [0.0] * 30]
    body = predict(trained, name, sequences)
    assert body["model"] == name
    assert body["version"] == 1
    batch = assert_predictions_well_formed(body, len(sequences))
    one_by_one = [predict(trained, name, [s])["predictions"][0]["probability"] for s in sequences]
    assert batch == pytest.approx(one_by_one, abs=1e-6)
    reversed_batch = [p["probability"] for p in predict(trained, name, sequences[::-1])["predictions"]]
    assert reversed_batch[::-1] == pytest.approx(batch, abs=1e-6)


@pytest.mark.parametrize("arch", list(RELEVANT))
def test_every_architecture_trains_on_user_data(client: TestClient, arch: str) -> None:
    data = TOKEN_DATA if arch in TOKEN_ARCHS else FLOAT_DATA
    job = train(client, "user", architecture=arch, data=data, params=dict(TINY_PARAMS), epochs=2, seed=3)
    assert job["version"] == 1
    assert job["epoch"] == 2
    meta = client.get("/models/user").json()
    assert meta["architecture"] == arch
    assert meta["max_len"] == 6  # the longest training sequence
    assert meta["params"] == {"max_len": 6, **{k: TINY_PARAMS[k] for k in RELEVANT[arch]}}
    assert meta["source"] == "request"
    assert set(meta["metrics"]) == METRIC_KEYS
    body = predict(client, "user", data["sequences"])
    assert body["version"] == 1
    assert_predictions_well_formed(body, len(data["sequences"]))


def test_same_seed_gives_the_same_model(client: TestClient, trained: TestClient) -> None:
    # The same request as the one behind the shared "m-lstm" model, in another app: same weights.
    train(client, "again", architecture="lstm", dataset="noisy_trend", epochs=2)
    probe = [[-1.0, -0.5, 0.0, 0.5, 1.0], [0.3] * 30, [1.0, -1.0]]
    again = [p["probability"] for p in predict(client, "again", probe)["predictions"]]
    original = [p["probability"] for p in predict(trained, "m-lstm", probe)["predictions"]]
    assert again == pytest.approx(original, abs=1e-6)
    assert client.get("/models/again").json()["metrics"] == pytest.approx(trained.get("/models/m-lstm").json()["metrics"])


def test_defaults_versions_and_version_pinning(client: TestClient) -> None:
    # No params at all: every parameter takes its default, max_len the longest sequence (6).
    first = client.post("/models/versions/train", json={"data": FLOAT_DATA, "epochs": 1})
    assert first.status_code == 202
    accepted = first.json()
    assert accepted["model"] == "versions"
    assert accepted["status"] == "queued"
    job = wait_for_job(client, accepted["job_id"])
    assert job["status"] == "succeeded", job
    assert job["version"] == 1
    meta = client.get("/models/versions").json()
    assert meta["architecture"] == "lstm"  # the default architecture
    assert meta["params"] == {"max_len": 6, "units": 10}
    probe = [[0.1, 0.2, 0.3], [0.5, -0.5, 0.5, -0.5, 0.5, -0.5]]
    v1 = [p["probability"] for p in predict(client, "versions", probe)["predictions"]]

    # A second training of the same name is version 2, with its own max_len and units.
    # An explicit max_len longer than every sequence wins: the training data is pre-padded to it.
    job2 = train(client, "versions", data={"sequences": [[0.1] * 3, [0.9] * 4], "labels": [0, 1]},
                 params={"units": 4, "max_len": 9}, epochs=1, validation_split=0.0)
    assert job2["version"] == 2
    meta = client.get("/models/versions").json()
    assert meta["version"] == 2
    assert meta["versions"] == [1, 2]
    assert meta["max_len"] == 9
    assert meta["params"] == {"max_len": 9, "units": 4}

    latest = predict(client, "versions", probe)
    assert latest["version"] == 2
    pinned = predict(client, "versions", probe, version=1)
    assert pinned["version"] == 1
    assert [p["probability"] for p in pinned["predictions"]] == pytest.approx(v1, abs=1e-7)
    assert predict(client, "versions", probe, version=2)["predictions"] == latest["predictions"]

    # A version-1 model still refuses sequences longer than its own max_len (6) even though v2 takes 9.
    too_long = client.post("/models/versions/predict", json={"sequences": [[0.0] * 8], "version": 1})
    assert too_long.status_code == 422

    missing = client.post("/models/versions/predict", json={"sequences": probe, "version": 3})
    assert missing.status_code == 404
    error = missing.json()["error"]
    assert error["code"] == "version_not_found"
    assert error["details"]["field"] == "version"
    assert error["details"]["got"] == 3


def test_max_len_shorter_than_the_training_data(client: TestClient) -> None:
    # max_len shorter than the longest training sequence is refused, naming the too-long sequence.
    response = client.post(
        "/models/narrow/train", json={"data": FLOAT_DATA, "params": {"max_len": 3, "units": 4}, "epochs": 1}
    )
    assert response.status_code == 422
    assert response.json()["error"]["details"]["field"] == "data.sequences[1]"
    assert client.get("/models/narrow").status_code == 404


def test_a_training_set_too_small_to_validate_says_so_once(client: TestClient) -> None:
    # Four sequences at validation_split 0.2 hold none out (int(4 * 0.2) == 0).
    data = {"sequences": [[0.1, 0.9], [0.9, 0.1], [0.2, 0.8], [0.8, 0.2]], "labels": [1, 0, 1, 0]}
    job = train(client, "small", data=data, params=dict(TINY_PARAMS), epochs=2)
    assert job["history"]["val_loss"] == [] and len(job["history"]["loss"]) == 2
    assert job["notes"] == [
        "No validation: 4 sequences with validation_split 0.2 leave none to hold out, so val_loss and val_accuracy "
        "stay empty and every metric is a training one; give more sequences or a larger validation_split to "
        "measure the model on data it did not fit."
    ]
    assert set(client.get("/models/small").json()["metrics"]) == {"loss", "accuracy"}
    # With room for validation there is nothing to say.
    job = train(client, "enough", data={"sequences": data["sequences"] * 3, "labels": data["labels"] * 3},
                params=dict(TINY_PARAMS), epochs=1)
    assert job["notes"] == [] and len(job["history"]["val_loss"]) == 1
