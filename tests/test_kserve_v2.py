"""KServe V2 over HTTP (``/v2``) on the shared trained models, through TestClient: JSON and the binary tensor data
extension, strict input names and datatypes as Triton, and Triton's sequence extension on sessions.

Requests follow kserve's ``required_api.md`` and Triton's ``binary_data.md`` / ``sequence_extension.md``. Every
probability must equal what ``/models/{name}/predict`` answers for the same sequences. The real clients
(``tritonclient``, the kserve SDK) against a real process are in ``tests/test_clients.py``.
"""

import json
import struct
import time
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.conftest import TRAINED
from tests.test_predict import MAX_LEN, TOKEN_NAMES, probabilities, sample_sequences
from tests.test_tfserving import assert_error, post_json

# --- KServe V2: health, server and model metadata ----------------------------------------------------


def test_v2_health_and_server_metadata(trained: TestClient) -> None:
    assert trained.get("/v2/health/live").json() == {"live": True}
    ready = trained.get("/v2/health/ready")
    assert ready.status_code == 200 and ready.json() == {"ready": True}
    assert trained.get("/v2").json() == {
        "name": "lstm-serve", "version": trained.app.version, "extensions": ["binary_tensor_data", "sequence"]
    }


@pytest.mark.parametrize(
    ("name", "datatype", "shape"), [("m-lstm", "FP32", [-1, MAX_LEN, 1]), ("m-emb", "INT32", [-1, MAX_LEN])]
)
def test_v2_model_metadata(trained: TestClient, name: str, datatype: str, shape: list[int]) -> None:
    expected = {
        "name": name,
        "versions": ["1"],
        "platform": "tensorflow_keras",
        "inputs": [{"name": "sequence", "datatype": datatype, "shape": shape}],
        "outputs": [{"name": "probability", "datatype": "FP32", "shape": [-1, 1]}],
    }
    assert trained.get(f"/v2/models/{name}").json() == expected
    assert trained.get(f"/v2/models/{name}/versions/1").json() == expected
    assert_error(trained.get(f"/v2/models/{name}/versions/7"), 404, "version 7")


def test_v2_model_ready(trained: TestClient) -> None:
    assert trained.get("/v2/models/m-lstm/ready").json() == {"name": "m-lstm", "ready": True}
    assert trained.get("/v2/models/m-bi/versions/1/ready").json() == {"name": "m-bi", "ready": True}
    assert_error(trained.get("/v2/models/nope/ready"), 404, "nope")
    assert_error(trained.get("/v2/models/m-lstm/versions/3/ready"), 404)


# --- KServe V2: infer --------------------------------------------------------------------------------


def v2_input(name: str, sequences: list[list[float]], *, trailing_one: bool = True, nested: bool = False) -> dict[str, Any]:
    """The model's ``sequence`` tensor carrying equal-length sequences."""
    tokens = name in TOKEN_NAMES
    shape = [len(sequences), len(sequences[0])] + ([] if tokens or not trailing_one else [1])
    data: Any = sequences if nested else [x for s in sequences for x in s]
    return {"name": "sequence", "shape": shape, "datatype": "INT32" if tokens else "FP32", "data": data}


@pytest.mark.parametrize("name", list(TRAINED))
def test_v2_infer_matches_native(trained: TestClient, name: str) -> None:
    sequences = sample_sequences(name, [MAX_LEN] * 3, seed=6)
    body = {"id": "42", "inputs": [v2_input(name, sequences)], "outputs": [{"name": "probability"}]}
    response = trained.post(f"/v2/models/{name}/infer", json=body)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "model_name": name,
        "model_version": "1",
        "id": "42",
        "outputs": [{"name": "probability", "shape": [3, 1], "datatype": "FP32", "data": probabilities(trained, name, sequences)}],
    }


def test_v2_infer_nested_data_short_rows_and_versions(trained: TestClient) -> None:
    sequences = sample_sequences("m-lstm", [10, 10], seed=7)  # shorter than max_len: pre-padded like /predict
    expected = probabilities(trained, "m-lstm", sequences)
    for path, tensor in [
        ("/v2/models/m-lstm/infer", v2_input("m-lstm", sequences, nested=True)),
        ("/v2/models/m-lstm/infer", v2_input("m-lstm", sequences, trailing_one=False)),
        ("/v2/models/m-lstm/versions/1/infer", v2_input("m-lstm", sequences)),
    ]:
        response = trained.post(path, json={"inputs": [tensor]})
        assert response.status_code == 200, response.text
        body = response.json()
        assert "id" not in body
        assert body["outputs"][0]["data"] == expected


def test_v2_infer_versions_and_unknown_model_are_404(trained: TestClient) -> None:
    body = {"inputs": [v2_input("m-lstm", [[0.1, 0.2]])]}
    assert_error(trained.post("/v2/models/m-lstm/versions/9/infer", json=body), 404, "version 9")
    assert_error(trained.post("/v2/models/nope/infer", json=body), 404, "nope")


@pytest.mark.parametrize(
    ("name", "tensor", "words"),
    [
        ("m-lstm", {"shape": [2, 3, 1], "data": [0.1] * 5}, ["shape [2, 3, 1]", "6", "5"]),
        ("m-lstm", {"shape": [1, 3, 2], "data": [0.1] * 6}, ["shape"]),
        ("m-lstm", {"shape": [6], "data": [0.1] * 6}, ["shape"]),
        ("m-lstm", {"shape": [0, 3], "data": []}, ["shape"]),
        ("m-lstm", {"shape": [1, MAX_LEN + 1], "data": [0.1] * (MAX_LEN + 1)}, [str(MAX_LEN + 1)]),
        ("m-lstm", {"data": [0.1, float("nan")], "shape": [1, 2]}, ["inputs[0].data[1]", "finite"]),
        ("m-lstm", {"data": [0.1, "a"], "shape": [1, 2]}, ["number"]),
        ("m-lstm", {"data": [0.1, 1e39], "shape": [1, 2]}, ["inputs[0].data[1]", "float32"]),
        ("m-lstm", {"data": [0.1, True], "shape": [1, 2]}, ["inputs[0].data[1]", "number"]),
        ("m-lstm", {"datatype": "BYTES"}, ["data-type is 'BYTES'", "expects 'FP32'"]),
        ("m-lstm", {"datatype": "FP64"}, ["data-type is 'FP64'", "expects 'FP32'"]),
        ("m-lstm", {"datatype": "INT32"}, ["data-type is 'INT32'", "expects 'FP32'"]),
        ("m-lstm", {"name": "input0"}, ["unexpected inference input 'input0'", "m-lstm"]),
        ("m-emb", {"datatype": "FP32", "data": [1, 2], "shape": [1, 2]}, ["expects 'INT32'"]),
        ("m-emb", {"datatype": "INT64", "data": [1, 2], "shape": [1, 2]}, ["expects 'INT32'"]),
        ("m-emb", {"datatype": "INT32", "data": [1, 2.5], "shape": [1, 2]}, ["inputs[0].data[1]", "INT32"]),
        ("m-emb", {"datatype": "INT32", "data": [1, 10**400], "shape": [1, 2]}, ["inputs[0].data[1]"]),
        ("m-emb", {"datatype": "INT32", "data": [1, 10**6], "shape": [1, 2]}, ["vocabulary"]),
        ("m-lstm", {"shape": [-1, 2], "data": [0.1, 0.2]}, ["shape"]),  # pydantic: dimensions are >= 0
    ],
)
def test_v2_bad_tensor_is_400(trained: TestClient, name: str, tensor: dict[str, Any], words: list[str]) -> None:
    base = {"name": "sequence", "shape": [1, 2], "datatype": "FP32", "data": [0.1, 0.2]}
    assert_error(post_json(trained, f"/v2/models/{name}/infer", {"inputs": [{**base, **tensor}]}), 400, *words)


def test_v2_bad_request_is_400(trained: TestClient) -> None:
    tensor = v2_input("m-lstm", [[0.1, 0.2]])
    infer = "/v2/models/m-lstm/infer"
    assert_error(trained.post(infer, json={"inputs": [tensor, tensor]}), 400, "expected 1 inputs but got 2")
    assert_error(trained.post(infer, json={"inputs": [tensor], "outputs": [{"name": "output0"}]}), 400, "output0")
    assert_error(trained.post(infer, json={"inputs": []}), 400, "inputs")
    assert_error(trained.post(infer, json={"inputs": [{"name": "sequence", "shape": [1, 2]}]}), 400, "datatype")
    no_values = {"name": "sequence", "shape": [1, 2], "datatype": "FP32"}
    assert_error(trained.post(infer, json={"inputs": [no_values]}), 400, "binary_data_size")


def test_v2_probabilities_are_a_flat_row_major_batch(trained: TestClient) -> None:
    sequences = sample_sequences("m-td", [MAX_LEN] * 4, seed=9)
    response = trained.post("/v2/models/m-td/infer", json={"inputs": [v2_input("m-td", sequences)]})
    output = response.json()["outputs"][0]
    assert output["shape"] == [4, 1]
    assert np.asarray(output["data"]).reshape(output["shape"]).shape == (4, 1)


# --- KServe V2: any Content-Type, the binary tensor data extension ------------------------------------


def binary_request(
    tensor: dict[str, Any], raw: bytes, parameters: dict[str, Any] | None = None, outputs: Any = None
) -> tuple[bytes, dict[str, str]]:
    """A body as ``tritonclient.http`` sends it: the JSON part, then the raw values; no Content-Type."""
    body: dict[str, Any] = {"inputs": [{**tensor, "parameters": {"binary_data_size": len(raw)}}]}
    if parameters is not None:
        body["parameters"] = parameters
    if outputs is not None:
        body["outputs"] = outputs
    header = json.dumps(body).encode()
    return header + raw, {"Inference-Header-Content-Length": str(len(header))}


def binary_output(response: Any) -> tuple[dict[str, Any], np.ndarray]:
    """The JSON part and the FP32 values of a binary answer."""
    assert response.status_code == 200, response.text
    length = int(response.headers["inference-header-content-length"])
    header = json.loads(response.content[:length])
    size = header["outputs"][0]["parameters"]["binary_data_size"]
    return header, np.frombuffer(response.content[length : length + size], "<f4")


@pytest.mark.parametrize("content_type", [None, "application/octet-stream", "text/plain"])
def test_v2_json_body_is_read_whatever_the_content_type(trained: TestClient, content_type: str | None) -> None:
    sequences = sample_sequences("m-lstm", [MAX_LEN], seed=12)
    headers = {"content-type": content_type} if content_type else {}
    body = json.dumps({"inputs": [v2_input("m-lstm", sequences)]}).encode()
    response = trained.post("/v2/models/m-lstm/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == probabilities(trained, "m-lstm", sequences)


@pytest.mark.parametrize("name", list(TRAINED))
def test_v2_binary_input_and_output_match_native(trained: TestClient, name: str) -> None:
    sequences = sample_sequences(name, [MAX_LEN] * 2, seed=13)
    tensor = v2_input(name, sequences)
    raw = np.asarray(sequences, dtype="<i4" if name in TOKEN_NAMES else "<f4").tobytes()
    content, headers = binary_request({k: v for k, v in tensor.items() if k != "data"}, raw, {"binary_data_output": True})
    header, values = binary_output(trained.post(f"/v2/models/{name}/infer", content=content, headers=headers))
    assert header["outputs"][0]["shape"] == [2, 1] and "data" not in header["outputs"][0]
    expected = np.asarray(probabilities(trained, name, sequences), np.float32)
    np.testing.assert_array_equal(values, expected)  # the same float32 numbers, bit for bit


def test_v2_binary_output_per_output_overrides_the_request(trained: TestClient) -> None:
    sequences = sample_sequences("m-lstm", [MAX_LEN], seed=14)
    body = {"inputs": [v2_input("m-lstm", sequences)], "parameters": {"binary_data_output": True}}
    as_json = trained.post("/v2/models/m-lstm/infer", json={**body, "outputs": [{"name": "probability", "parameters": {"binary_data": False}}]})
    assert "inference-header-content-length" not in as_json.headers
    assert as_json.json()["outputs"][0]["data"] == probabilities(trained, "m-lstm", sequences)
    as_binary = trained.post("/v2/models/m-lstm/infer", json={"inputs": body["inputs"], "outputs": [{"name": "probability", "parameters": {"binary_data": True}}]})
    _, values = binary_output(as_binary)
    np.testing.assert_array_equal(values, np.asarray(probabilities(trained, "m-lstm", sequences), np.float32))


@pytest.mark.parametrize(
    ("raw", "size_delta", "length", "words"),
    [
        (struct.pack("<2f", 0.1, float("nan")), 0, None, ["inputs[0].data[1]", "finite"]),
        (struct.pack("<2f", 0.1, float("inf")), 0, None, ["inputs[0].data[1]", "finite"]),
        (struct.pack("<2f", 0.1, 0.2), 4, None, ["binary_data_size"]),
        (struct.pack("<2f", 0.1, 0.2)[:7], 0, None, ["7 bytes", "whole number"]),
        (struct.pack("<2f", 0.1, 0.2), -1, None, ["1 bytes follow"]),
        (struct.pack("<3f", 0.1, 0.2, 0.3), 0, None, ["shape [1, 2]", "3"]),
        (struct.pack("<2f", 0.1, 0.2), 0, "x", ["Inference-Header-Content-Length"]),
        (struct.pack("<2f", 0.1, 0.2), 0, "999999", ["Inference-Header-Content-Length"]),
    ],
)
def test_v2_bad_binary_is_400(trained: TestClient, raw: bytes, size_delta: int, length: str | None, words: list[str]) -> None:
    tensor = {"name": "sequence", "shape": [1, 2], "datatype": "FP32"}
    content, headers = binary_request(tensor, raw)
    if size_delta:
        header_len = int(headers["Inference-Header-Content-Length"])
        body = json.loads(content[:header_len])
        body["inputs"][0]["parameters"]["binary_data_size"] += size_delta
        header = json.dumps(body).encode()
        content, headers = header + raw, {"Inference-Header-Content-Length": str(len(header))}
    if length is not None:
        headers["Inference-Header-Content-Length"] = length
    assert_error(trained.post("/v2/models/m-lstm/infer", content=content, headers=headers), 400, *words)


def test_v2_leftover_binary_bytes_are_400(trained: TestClient) -> None:
    header = json.dumps({"inputs": [v2_input("m-lstm", [[0.1, 0.2]])]}).encode()
    response = trained.post(
        "/v2/models/m-lstm/infer", content=header + b"\0" * 8, headers={"Inference-Header-Content-Length": str(len(header))}
    )
    assert_error(response, 400, "8 bytes")


# --- KServe V2: Triton's sequence extension -------------------------------------------------------------


def sequence_infer(client: TestClient, model: str, values: list[float], **parameters: Any) -> Any:
    tensor = v2_input(model, [values])
    return client.post(f"/v2/models/{model}/infer", json={"inputs": [tensor], "parameters": parameters})


def test_v2_sequence_steps_a_session_and_end_closes_it(trained: TestClient) -> None:
    values = sample_sequences("m-stateful", [6], seed=15)[0]
    # The same values through a native session: the reference.
    session = trained.post("/models/m-stateful/sessions").json()["session_id"]
    expected = trained.post(f"/sessions/{session}/step", json={"values": values}).json()["probabilities"]

    first = sequence_infer(trained, "m-stateful", values[:2], sequence_id=7, sequence_start=True)
    assert first.status_code == 200, first.text
    assert first.json()["outputs"][0]["shape"] == [2, 1]
    middle = sequence_infer(trained, "m-stateful", values[2:5], sequence_id=7)
    last = sequence_infer(trained, "m-stateful", values[5:], sequence_id=7, sequence_end=True)
    stepped = [p for r in (first, middle, last) for p in r.json()["outputs"][0]["data"]]
    np.testing.assert_allclose(stepped, expected, atol=1e-6)
    after_end = sequence_infer(trained, "m-stateful", values[:1], sequence_id=7)
    assert_error(after_end, 400, "sequence 7", "'m-stateful'", "START")


def test_v2_sequence_ids_are_per_model_and_typed(trained: TestClient) -> None:
    values = sample_sequences("m-lstm", [3], seed=16)[0]
    assert sequence_infer(trained, "m-lstm", values, sequence_id=8, sequence_start=True).status_code == 200
    assert_error(sequence_infer(trained, "m-lstm", values, sequence_id="8"), 400, "START")  # "8" is not 8
    assert_error(sequence_infer(trained, "m-td", values, sequence_id=8), 400, "START")  # nor another model's 8
    restarted = sequence_infer(trained, "m-lstm", values[:1], sequence_id=8, sequence_start=True)
    fresh = sequence_infer(trained, "m-lstm", values[:1], sequence_id="fresh", sequence_start=True, sequence_end=True)
    assert restarted.json()["outputs"][0]["data"] == fresh.json()["outputs"][0]["data"]  # a start begins at zero


@pytest.mark.parametrize(
    ("model", "parameters", "values", "status", "words"),
    [
        ("m-lstm", {"sequence_id": 9}, [0.1], 400, ["sequence 9", "START"]),
        ("m-lstm", {"sequence_id": 0, "sequence_start": True}, [0.1], 400, ["sequence_id"]),
        ("m-lstm", {"sequence_id": 1.5, "sequence_start": True}, [0.1], 400, ["sequence_id"]),
        ("m-lstm", {"sequence_id": 9, "sequence_start": "yes"}, [0.1], 400, ["sequence_start"]),
        ("m-bi", {"sequence_id": 9, "sequence_start": True}, [3], 409, ["bidirectional"]),
    ],
)
def test_v2_sequence_errors(
    trained: TestClient, model: str, parameters: dict[str, Any], values: list[float], status: int, words: list[str]
) -> None:
    assert_error(sequence_infer(trained, model, values, **parameters), status, *words)


def test_v2_sequence_request_carries_one_sequence(trained: TestClient) -> None:
    tensor = v2_input("m-lstm", [[0.1, 0.2], [0.3, 0.4]])
    body = {"inputs": [tensor], "parameters": {"sequence_id": 10, "sequence_start": True}}
    assert_error(trained.post("/v2/models/m-lstm/infer", json=body), 400, "batch 1")


def test_v2_sequence_idles_out_after_the_session_ttl(app_client: Any, trained_dir: Any) -> None:
    client = app_client(trained_dir, session_ttl_s=1)
    assert sequence_infer(client, "m-lstm", [0.1], sequence_id=12, sequence_start=True).status_code == 200
    assert sequence_infer(client, "m-lstm", [0.2], sequence_id=12).status_code == 200  # within the TTL: continues
    time.sleep(1.5)
    assert_error(sequence_infer(client, "m-lstm", [0.3], sequence_id=12), 400, "sequence 12", "START")
