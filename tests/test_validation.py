"""Bad requests: every one is a 4xx with body {"error": {"code", "message", "details"}} naming the field."""

from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

FLOAT_MODEL = "m-lstm"
TOKEN_MODEL = "m-emb"  # vocab_size 100
GOOD_DATA = {"sequences": [[0.1, 0.2], [0.3, 0.4, 0.5]], "labels": [0, 1]}


def assert_error(response: httpx.Response, status: int, code: str | None = None, field: str | None = None) -> dict[str, Any]:
    """Check the error envelope and return its ``error`` object."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"code", "message", "details"}
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], dict)
    if code is not None:
        assert error["code"] == code, error
    if field is not None:
        assert error["details"].get("field") == field, error
    return error


def post_raw(client: TestClient, path: str, text: str) -> httpx.Response:
    return client.post(path, content=text.encode(), headers={"content-type": "application/json"})


# --- prediction bodies -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sequences", "field"),
    [
        ([[0.1, "0.2"]], "sequences[0][1]"),
        ([[0.1], [0.2, "abc", 0.3]], "sequences[1][1]"),
        ([[True, 0.5]], "sequences[0][0]"),
        ([[0.5, False]], "sequences[0][1]"),
        ([[None]], "sequences[0][0]"),
        ([[[0.1]]], "sequences[0][0]"),
        ([0.1, 0.2], "sequences[0]"),
        ("0.1", "sequences"),
    ],
)
def test_predict_wrong_types(trained: TestClient, sequences: Any, field: str) -> None:
    response = trained.post(f"/models/{FLOAT_MODEL}/predict", json={"sequences": sequences})
    error = assert_error(response, 422, "validation_error", field)
    assert field in error["message"]


@pytest.mark.parametrize(
    ("text", "field", "got"),
    [
        ('{"sequences": [[NaN]]}', "sequences[0][0]", "NaN"),
        ('{"sequences": [[0.5, Infinity]]}', "sequences[0][1]", "inf"),
        ('{"sequences": [[0.5], [0.1, -Infinity]]}', "sequences[1][1]", "-inf"),
    ],
)
def test_predict_non_finite_numbers(trained: TestClient, text: str, field: str, got: str) -> None:
    error = assert_error(post_raw(trained, f"/models/{FLOAT_MODEL}/predict", text), 422, "validation_error", field)
    assert error["details"]["got"] == got


def test_predict_empty_list(trained: TestClient) -> None:
    response = trained.post(f"/models/{FLOAT_MODEL}/predict", json={"sequences": []})
    assert_error(response, 422, field="sequences")


def test_predict_empty_inner_sequence(trained: TestClient) -> None:
    response = trained.post(f"/models/{FLOAT_MODEL}/predict", json={"sequences": [[0.1], []]})
    error = assert_error(response, 422, field="sequences[1]")
    assert error["details"]["got"] == 0


def test_predict_missing_and_unknown_fields(trained: TestClient) -> None:
    assert_error(trained.post(f"/models/{FLOAT_MODEL}/predict", json={}), 422, "validation_error", "sequences")
    response = trained.post(f"/models/{FLOAT_MODEL}/predict", json={"sequences": [[0.1]], "verison": 1})
    assert_error(response, 422, "validation_error", "verison")


def test_predict_malformed_json(trained: TestClient) -> None:
    response = post_raw(trained, f"/models/{FLOAT_MODEL}/predict", '{"sequences": [[0.1,]')
    assert_error(response, 422, "validation_error")


@pytest.mark.parametrize(
    ("sequences", "field", "got"),
    [
        ([[1, 2, 100]], "sequences[0][2]", 100),  # == vocab_size
        ([[1, 2, 5000]], "sequences[0][2]", 5000),
        ([[1, 2, -1]], "sequences[0][2]", -1),
        ([[1, 2, 1.5]], "sequences[0][2]", 1.5),
        ([[4, 5, 6, 7], [1, 2, 1.5]], "sequences[1][2]", 1.5),  # ragged: index in the sequence as sent
        ([[1, 2, 3], [7, 99, 100, 3]], "sequences[1][2]", 100),
    ],
)
def test_predict_bad_token_ids(trained: TestClient, sequences: list[list[float]], field: str, got: float) -> None:
    response = trained.post(f"/models/{TOKEN_MODEL}/predict", json={"sequences": sequences})
    error = assert_error(response, 422, "invalid_input", field)
    assert error["details"]["got"] == got


@pytest.mark.parametrize(
    ("truncate", "sequence", "field"),
    [
        ("pre", [1] * 34 + [100], "sequences[0][34]"),  # kept part: index in the sequence as sent
        ("pre", [1] * 10 + [100] + [1] * 24, "sequences[0][10]"),
        ("post", [1] * 29 + [100] + [1] * 5, "sequences[0][29]"),
    ],
)
def test_predict_bad_token_in_truncated_sequence(trained: TestClient, truncate: str, sequence: list[int], field: str) -> None:
    body = {"sequences": [sequence], "truncate": truncate}
    error = assert_error(trained.post(f"/models/{TOKEN_MODEL}/predict", json=body), 422, "invalid_input", field)
    assert error["details"]["got"] == 100


def test_predict_bad_token_in_the_cut_part_is_ignored(trained: TestClient) -> None:
    sequence = [100, -1, 7.5] + [3] * 30  # the first 3 steps are cut by truncate="pre"
    cut = trained.post(f"/models/{TOKEN_MODEL}/predict", json={"sequences": [sequence], "truncate": "pre"})
    sliced = trained.post(f"/models/{TOKEN_MODEL}/predict", json={"sequences": [sequence[3:]]})
    assert cut.status_code == 200, cut.text
    assert cut.json() == sliced.json()


def test_predict_whole_floats_are_valid_token_ids(trained: TestClient) -> None:
    as_floats = trained.post(f"/models/{TOKEN_MODEL}/predict", json={"sequences": [[1.0, 99.0, 0.0]]})
    as_ints = trained.post(f"/models/{TOKEN_MODEL}/predict", json={"sequences": [[1, 99, 0]]})
    assert as_floats.status_code == 200
    assert as_floats.json() == as_ints.json()


@pytest.mark.parametrize("name", ["Upper", "m_LSTM", "a" * 65, "-leading-dash", "_x", "has.dot", "sp ace"])
def test_invalid_model_names(trained: TestClient, name: str) -> None:
    for response in (
        trained.post(f"/models/{name}/predict", json={"sequences": [[0.1]]}),
        trained.get(f"/models/{name}"),
        trained.post(f"/models/{name}/train", json={"dataset": "noisy_trend"}),
        trained.delete(f"/models/{name}"),
    ):
        assert_error(response, 422, "validation_error", "name")


def test_longest_valid_name_is_accepted(trained: TestClient) -> None:
    name = "a" * 64
    assert_error(trained.get(f"/models/{name}"), 404, "model_not_found")


def test_unknown_model_and_job(trained: TestClient) -> None:
    assert_error(trained.get("/models/ghost"), 404, "model_not_found")
    assert_error(trained.post("/models/ghost/predict", json={"sequences": [[0.1]]}), 404, "model_not_found")
    assert_error(trained.delete("/models/ghost"), 404, "model_not_found")
    error = assert_error(trained.get("/jobs/0123456789abcdef"), 404, "job_not_found")
    assert error["details"]["job_id"] == "0123456789abcdef"
    assert_error(trained.delete("/jobs/0123456789abcdef"), 404, "job_not_found")


def test_unknown_route_uses_the_error_envelope(client: TestClient) -> None:
    assert_error(client.get("/no/such/route"), 404, "not_found")
    assert_error(client.put("/architectures"), 405, "method_not_allowed")


# --- training bodies ---------------------------------------------------------------------------


def _train(client: TestClient, body: dict[str, Any], name: str = "bad") -> httpx.Response:
    return client.post(f"/models/{name}/train", json=body)


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({"architecture": "gru", "dataset": "noisy_trend"}, 422, "validation_error", "architecture"),
        ({"architecture": "lstm", "dataset": "mnist"}, 422, "dataset_not_found", "dataset"),
        ({"architecture": "embedding_lstm", "dataset": "noisy_trend"}, 422, "invalid_input", "dataset"),
        ({"architecture": "embedding_bilstm", "dataset": "long_memory"}, 422, "invalid_input", "dataset"),
        ({"architecture": "lstm", "data": GOOD_DATA, "dataset": "noisy_trend"}, 422, "validation_error", None),
        ({"architecture": "lstm"}, 422, "validation_error", None),
        ({"data": {"sequences": [[0.1], [0.2]], "labels": [0, 2]}}, 422, "validation_error", "data.labels[1]"),
        ({"data": {"sequences": [[0.1], [0.2]], "labels": [0.5, 1]}}, 422, "validation_error", "data.labels[0]"),
        ({"data": {"sequences": [[0.1], [0.2]], "labels": ["1", 0]}}, 422, "validation_error", "data.labels[0]"),
        ({"data": {"sequences": [[0.1], [0.2]], "labels": [0, -1]}}, 422, "validation_error", "data.labels[1]"),
        ({"data": {"sequences": [[0.1], [0.2], [0.3]], "labels": [0, 1]}}, 422, "invalid_input", "data.labels"),
        ({"data": {"sequences": [[0.1], ["x"]], "labels": [0, 1]}}, 422, "validation_error", "data.sequences[1][0]"),
        ({"data": {"sequences": [[0.1], []], "labels": [0, 1]}}, 422, "invalid_input", "data.sequences[1]"),
        ({"data": {"sequences": [[0.1]], "labels": [0]}}, 422, "validation_error", "data.sequences"),
        (
            {"architecture": "embedding_lstm", "data": {"sequences": [[1, 2], [3, 1.5]], "labels": [0, 1]}},
            422, "invalid_input", "data.sequences[1][1]",
        ),
        (
            {"architecture": "embedding_lstm", "params": {"vocab_size": 10},
             "data": {"sequences": [[1, 2], [3, 10]], "labels": [0, 1]}},
            422, "invalid_input", "data.sequences[1][1]",
        ),
        ({"dataset": "noisy_trend", "epochs": 0}, 422, "validation_error", "epochs"),
        ({"dataset": "noisy_trend", "epochs": 201}, 422, "invalid_input", "epochs"),
        ({"dataset": "noisy_trend", "validation_split": 1.0}, 422, "validation_error", "validation_split"),
        ({"dataset": "noisy_trend", "batch_size": 0}, 422, "validation_error", "batch_size"),
        ({"dataset": "noisy_trend", "params": {"units": 0}}, 422, "validation_error", "params.units"),
        ({"dataset": "noisy_trend", "params": {"layers": 3}}, 422, "validation_error", "params.layers"),
        ({"dataset": "noisy_trend", "optimizer": "sgd"}, 422, "validation_error", "optimizer"),
    ],
)
def test_bad_training_requests(client: TestClient, body: dict[str, Any], status: int, code: str, field: str | None) -> None:
    assert_error(_train(client, body), status, code, field)
    # Refused up front: no job ran, no model exists.
    assert client.get("/models").json() == []


def test_boolean_labels_are_refused(client: TestClient) -> None:
    body = {"data": {"sequences": [[0.1], [0.2]], "labels": [True, 0]}}
    assert_error(_train(client, body), 422, "validation_error", "data.labels[0]")


def test_data_and_dataset_message_says_exactly_one(client: TestClient) -> None:
    both = assert_error(_train(client, {"data": GOOD_DATA, "dataset": "noisy_trend"}), 422)
    neither = assert_error(_train(client, {}), 422)
    for error in (both, neither):
        assert "exactly one" in error["message"]


def test_unknown_dataset_lists_the_builtins(client: TestClient) -> None:
    error = assert_error(_train(client, {"dataset": "mnist"}), 422, "dataset_not_found", "dataset")
    assert error["details"]["got"] == "mnist"
    assert set(error["details"]["expected"]) == {"noisy_trend", "long_memory", "token_pattern", "token_cue_start", "movements", "next_value"}


def test_training_non_finite_values(client: TestClient) -> None:
    text = '{"data": {"sequences": [[0.1, NaN], [0.2]], "labels": [0, 1]}}'
    assert_error(post_raw(client, "/models/bad/train", text), 422, "validation_error", "data.sequences[0][1]")
    text = '{"data": {"sequences": [[0.1], [Infinity]], "labels": [0, 1]}}'
    assert_error(post_raw(client, "/models/bad/train", text), 422, "validation_error", "data.sequences[1][0]")


def test_too_many_sequences_per_request(app_client: Any, trained_dir: Any) -> None:
    client = app_client(trained_dir, max_sequences_per_request=2)  # the shared models, read only
    assert client.post(f"/models/{FLOAT_MODEL}/predict", json={"sequences": [[0.1], [0.2]]}).status_code == 200
    response = client.post(f"/models/{FLOAT_MODEL}/predict", json={"sequences": [[0.1], [0.2], [0.3]]})
    error = assert_error(response, 422, "invalid_input", "sequences")
    assert error["details"]["got"] == 3


@pytest.mark.parametrize("value", [1e39, -1e300])
def test_numbers_beyond_float32_are_refused(trained: TestClient, value: float) -> None:
    response = trained.post("/models/m-lstm/predict", json={"sequences": [[0.1, value]]})
    assert_error(response, 422, "validation_error", "sequences[0][1]")
