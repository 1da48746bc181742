"""TF Serving REST routes (``/v1``) on the shared trained models, through TestClient.

Requests follow the shapes in TF Serving's ``api_rest.md``: row format ``{"instances": [...]}`` and columnar
``{"inputs": {...}}``. Every probability must equal what ``/models/{name}/predict`` answers for the same
sequences. The documented curl forms against a real process are in ``tests/test_clients.py``.
"""

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import TRAINED
from tests.test_predict import MAX_LEN, TOKEN_NAMES, probabilities, sample_sequences

FLOAT_NAMES = [name for name in TRAINED if name not in TOKEN_NAMES]


def assert_error(response: Any, status: int, *words: str) -> str:
    """The protocols' error shape: exactly ``{"error": "<message>"}``, with the given status."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str), body
    for word in words:
        assert word in body["error"], body["error"]
    return body["error"]


def post_json(client: TestClient, path: str, body: Any) -> Any:
    """POST ``body`` as Python's ``json`` writes it: NaN and Infinity as the bare tokens TF Serving clients send."""
    return client.post(path, content=json.dumps(body).encode(), headers={"content-type": "application/json"})


def as_column(sequence: list[float]) -> list[list[float]]:
    """A sequence as TF Serving / Keras clients send it: shape ``(steps, 1)``."""
    return [[x] for x in sequence]


# --- TF Serving: predict -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(TRAINED))
def test_tf_row_format_matches_native(trained: TestClient, name: str) -> None:
    sequences = sample_sequences(name, [MAX_LEN, 7, 1, MAX_LEN], seed=1)
    # Float instances as (steps, 1) tensors, the way Keras clients send them; token ids as a plain list.
    instances = sequences if name in TOKEN_NAMES else [as_column(s) for s in sequences]
    response = trained.post(f"/v1/models/{name}:predict", json={"instances": instances})
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": [[p] for p in probabilities(trained, name, sequences)]}


@pytest.mark.parametrize("name", ["m-lstm", "m-emb"])
def test_tf_row_format_flat_steps_and_named_inputs(trained: TestClient, name: str) -> None:
    sequences = sample_sequences(name, [MAX_LEN, 12], seed=2)
    expected = [[p] for p in probabilities(trained, name, sequences)]
    flat = trained.post(f"/v1/models/{name}:predict", json={"instances": sequences})
    named = trained.post(
        f"/v1/models/{name}:predict",
        json={"signature_name": "serving_default", "instances": [{"sequence": s} for s in sequences]},
    )
    assert flat.json() == {"predictions": expected}
    assert named.json() == {"predictions": expected}


@pytest.mark.parametrize("name", ["m-lstm", "m-td", "m-emb"])
def test_tf_columnar_format_matches_native(trained: TestClient, name: str) -> None:
    sequences = sample_sequences(name, [MAX_LEN, 3], seed=3)
    expected = [[p] for p in probabilities(trained, name, sequences)]
    as_map = trained.post(f"/v1/models/{name}:predict", json={"inputs": {"sequence": sequences}})
    as_list = trained.post(f"/v1/models/{name}:predict", json={"inputs": sequences})
    assert as_map.status_code == 200, as_map.text
    assert as_map.json() == {"outputs": expected}
    assert as_list.json() == {"outputs": expected}


def test_tf_versioned_predict(trained: TestClient) -> None:
    sequences = sample_sequences("m-lstm", [MAX_LEN], seed=5)
    response = trained.post("/v1/models/m-lstm/versions/1:predict", json={"instances": sequences})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == [[p] for p in probabilities(trained, "m-lstm", sequences, version=1)]
    missing = trained.post("/v1/models/m-lstm/versions/99:predict", json={"instances": sequences})
    assert_error(missing, 404, "version 99")


def test_existing_tf_serving_client_code_works_unchanged(trained: TestClient) -> None:
    """Written the way a TF Serving client is: a URL, ``:predict``, a JSON body, ``predictions``."""
    post, url = trained.post, str(trained.base_url).rstrip("/")  # stand-ins for httpx.post and the server URL

    response = post(url + "/v1/models/m-lstm:predict", json={"instances": [[[0.1], [0.2]]]})
    response.raise_for_status()
    predictions = response.json()["predictions"]

    assert len(predictions) == 1 and len(predictions[0]) == 1
    assert 0.0 <= predictions[0][0] <= 1.0
    assert predictions[0][0] == probabilities(trained, "m-lstm", [[0.1, 0.2]])[0]  # pre-padded like /predict


# --- TF Serving: status and metadata -----------------------------------------------------------------


def test_tf_model_status_lists_versions(trained: TestClient) -> None:
    expected = {"model_version_status": [{"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    assert trained.get("/v1/models/m-lstm").json() == expected
    assert trained.get("/v1/models/m-lstm/versions/1").json() == expected
    assert_error(trained.get("/v1/models/m-lstm/versions/2"), 404, "version 2")
    assert_error(trained.get("/v1/models/nope"), 404, "nope")


@pytest.mark.parametrize(
    ("name", "dtype", "dims"), [("m-lstm", "DT_FLOAT", ["-1", str(MAX_LEN), "1"]), ("m-emb", "DT_INT32", ["-1", str(MAX_LEN)])]
)
def test_tf_metadata_describes_the_signature(trained: TestClient, name: str, dtype: str, dims: list[str]) -> None:
    assert trained.get(f"/models/{name}").json()["max_len"] == MAX_LEN
    for path in (f"/v1/models/{name}/metadata", f"/v1/models/{name}/versions/1/metadata"):
        body = trained.get(path).json()
        assert body["model_spec"] == {"name": name, "signature_name": "", "version": "1"}
        signature = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
        assert signature["method_name"] == "tensorflow/serving/predict"
        (input_name, tensor), = signature["inputs"].items()
        assert input_name == "sequence"
        assert tensor["dtype"] == dtype
        assert [d["size"] for d in tensor["tensor_shape"]["dim"]] == dims
        output = signature["outputs"]["probability"]
        assert output["dtype"] == "DT_FLOAT"
        assert [d["size"] for d in output["tensor_shape"]["dim"]] == ["-1", "1"]
    assert_error(trained.get("/v1/models/nope/metadata"), 404)


# --- TF Serving: errors ------------------------------------------------------------------------------


def test_tf_unknown_model_is_404_like_the_docs_example(trained: TestClient) -> None:
    # api_rest.md: POST .../v1/models/half:predict for a model that is not served -> 404 {"error": "..."}
    assert_error(trained.post("/v1/models/half:predict", json={"instances": [1.0, 5.0]}), 404, "half")


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"instances": [[[0.1, 0.2], [0.3, 0.4]]]}, ["instances[0][0]", "1-element"]),  # shape (2, 2), not (steps, 1)
        ({"instances": [1.0, 5.0]}, ["instances[0]", "sequence"]),  # scalars, not sequences
        ({"instances": [[0.1, float("nan")]]}, ["instances[0][1]", "finite", "NaN"]),
        ({"instances": [[0.1, "x"]]}, ["instances[0][1]", "number"]),
        ({"instances": [[0.1, True]]}, ["instances[0][1]", "number"]),
        ({"instances": [{"a": [0.1], "b": [0.2]}]}, ["instances[0]", "one input"]),
        ({"instances": [[0.1] * (MAX_LEN + 1)]}, [str(MAX_LEN + 1)]),
        ({"instances": []}, ["at least one"]),
        ({"inputs": {"sequence": [[0.1]], "other": [[0.2]]}}, ["one input"]),
        ({"inputs": [[float("inf")]]}, ["inputs[0][0]", "finite"]),
        ({"instances": [[0.1]], "inputs": [[0.1]]}, ["exactly one"]),
        ({}, ["exactly one"]),
        ({"signature_name": "classify", "instances": [[0.1]]}, ["serving_default"]),
    ],
)
def test_tf_bad_input_is_400_with_an_error_string(trained: TestClient, body: dict[str, Any], words: list[str]) -> None:
    assert_error(post_json(trained, "/v1/models/m-lstm:predict", body), 400, *words)


def test_tf_token_errors_are_400(trained: TestClient) -> None:
    assert_error(trained.post("/v1/models/m-emb:predict", json={"instances": [[1, 2.5]]}), 400, "whole")
    assert_error(trained.post("/v1/models/m-emb:predict", json={"instances": [[1, 10**6]]}), 400, "vocabulary")


def test_tf_raw_nan_token_and_malformed_json_are_400(trained: TestClient) -> None:
    headers = {"content-type": "application/json"}
    nan = trained.post("/v1/models/m-lstm:predict", content=b'{"instances": [[[0.1], [NaN]]]}', headers=headers)
    assert_error(nan, 400, "finite")
    assert_error(trained.post("/v1/models/m-lstm:predict", content=b'{"instances": [', headers=headers), 400)
    assert_error(trained.post("/v1/models/Bad_Name:predict", json={"instances": [[0.1]]}), 400, "name")


@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded", "text/plain"])
def test_tf_json_body_is_read_whatever_the_content_type(trained: TestClient, content_type: str | None) -> None:
    """TF Serving parses the body as JSON whatever it is declared as (``curl -d`` declares a form)."""
    sequences = sample_sequences("m-lstm", [MAX_LEN], seed=11)
    headers = {"content-type": content_type} if content_type else {}
    body = json.dumps({"instances": sequences}).encode()
    response = trained.post("/v1/models/m-lstm:predict", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": [[p] for p in probabilities(trained, "m-lstm", sequences)]}


def test_tf_auth_error_is_in_tf_format(app_client: Any, trained_dir: Any) -> None:
    """Errors raised before the body is read (auth) come in TF Serving's format too."""
    client = app_client(trained_dir, api_key="k", api_key_all=True)
    assert_error(client.post("/v1/models/m-lstm:predict", json={"instances": [[0.1]]}), 401, "Bearer")
    ok = client.post("/v1/models/m-lstm:predict", json={"instances": [[0.1]]}, headers={"Authorization": "Bearer k"})
    assert ok.status_code == 200, ok.text
