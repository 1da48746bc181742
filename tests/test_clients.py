"""Real clients at their defaults against a real ``python -m service`` process (HTTP and gRPC on one process):
``tritonclient.http`` and ``tritonclient.grpc`` (binary tensors, as they send by default, and JSON), the kserve
SDK's REST (V2 and its default V1) and gRPC clients, Triton sequences over HTTP, gRPC and the gRPC stream,
and TF Serving's documented curl forms, verbatim but for the host, model and values.

Every probability must equal ``/models/{name}/predict`` (the same float32 numbers); every sequence step the
seed's Keras stateful model (1e-5).
"""

import json
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.conftest import TRAINED
from tests.process import ServiceProcess, drop_redis_keys, free_port, process_factory
from tests.test_operations import _sample
from tests.test_predict import MAX_LEN, TOKEN_NAMES, sample_sequences
from tests.test_sessions import keras_stateful_probabilities

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

SEQUENCE_MODELS = ["m-stateful", "m-emb"]
REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="module")
def served(trained_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServiceProcess, int]]:
    """A real process serving the shared trained models over HTTP and gRPC: the process and its gRPC port."""
    workdir = tmp_path_factory.mktemp("clients")
    start, started = process_factory(workdir)
    grpc_port = free_port()
    service = start(trained_dir, "clients", GRPC_PORT=str(grpc_port), DEMO_MODEL="false", LOG_LEVEL="warning")
    try:
        service.wait_ready()
        yield service, grpc_port
    finally:
        for process in started:
            process.kill()


@pytest.fixture(scope="module")
def http_client(served: tuple[ServiceProcess, int]) -> Iterator[triton_http.InferenceServerClient]:
    client = triton_http.InferenceServerClient(served[0].url.removeprefix("http://"))
    yield client
    client.close()


@pytest.fixture(scope="module")
def grpc_client(served: tuple[ServiceProcess, int]) -> Iterator[triton_grpc.InferenceServerClient]:
    client = triton_grpc.InferenceServerClient(f"127.0.0.1:{served[1]}")
    yield client
    client.close()


def batch(name: str, lengths: list[int], seed: int) -> tuple[list[list[float]], np.ndarray]:
    """Sequences and the tensor a client sends for them: FP32 ``[n, steps, 1]`` or INT32 ``[n, steps]``."""
    sequences = sample_sequences(name, lengths, seed=seed)
    if name in TOKEN_NAMES:
        return sequences, np.asarray(sequences, np.int32)
    return sequences, np.asarray(sequences, np.float32)[:, :, None]


def native(service: ServiceProcess, name: str, sequences: list[list[float]]) -> np.ndarray:
    """What ``/models/{name}/predict`` answers, as the float32 numbers every protocol carries."""
    return np.asarray([p["probability"] for p in service.predict(name, sequences)["predictions"]], np.float32)


def datatype(name: str) -> str:
    return "INT32" if name in TOKEN_NAMES else "FP32"


# --- tritonclient.http and tritonclient.grpc -----------------------------------------------------------


def test_triton_clients_health_and_server_metadata(
    http_client: triton_http.InferenceServerClient, grpc_client: triton_grpc.InferenceServerClient
) -> None:
    assert http_client.is_server_live() and http_client.is_server_ready()
    assert grpc_client.is_server_live() and grpc_client.is_server_ready()
    for metadata in (http_client.get_server_metadata(), grpc_client.get_server_metadata(as_json=True)):
        assert metadata["name"] == "lstm-serve"
        assert metadata["extensions"] == ["binary_tensor_data", "sequence"]


@pytest.mark.parametrize("name", list(TRAINED))
def test_triton_clients_model_ready_and_metadata(
    http_client: triton_http.InferenceServerClient, grpc_client: triton_grpc.InferenceServerClient, name: str
) -> None:
    shape = [-1, MAX_LEN] if name in TOKEN_NAMES else [-1, MAX_LEN, 1]
    assert http_client.is_model_ready(name) and grpc_client.is_model_ready(name)
    for metadata in (http_client.get_model_metadata(name), grpc_client.get_model_metadata(name, as_json=True)):
        assert metadata["versions"] == ["1"]
        (tensor,) = metadata["inputs"]
        assert (tensor["name"], tensor["datatype"], [int(d) for d in tensor["shape"]]) == ("sequence", datatype(name), shape)
        (output,) = metadata["outputs"]
        assert (output["name"], output["datatype"], [int(d) for d in output["shape"]]) == ("probability", "FP32", [-1, 1])


@pytest.mark.parametrize("name", list(TRAINED))
def test_tritonclient_http_infer_binary_and_json(
    served: tuple[ServiceProcess, int], http_client: triton_http.InferenceServerClient, name: str
) -> None:
    sequences, tensor = batch(name, [MAX_LEN] * 3, seed=21)
    expected = native(served[0], name, sequences)

    binary = triton_http.InferInput("sequence", list(tensor.shape), datatype(name))
    binary.set_data_from_numpy(tensor)  # the default: binary in, binary out
    result = http_client.infer(name, [binary])
    np.testing.assert_array_equal(result.as_numpy("probability"), expected.reshape(-1, 1))
    assert result.get_response()["outputs"][0]["parameters"]["binary_data_size"] == 12

    as_json = triton_http.InferInput("sequence", list(tensor.shape), datatype(name))
    as_json.set_data_from_numpy(tensor, binary_data=False)
    wanted = triton_http.InferRequestedOutput("probability", binary_data=False)
    result = http_client.infer(name, [as_json], outputs=[wanted])
    np.testing.assert_array_equal(result.as_numpy("probability"), expected.reshape(-1, 1))
    assert "data" in result.get_response()["outputs"][0]


@pytest.mark.parametrize("name", list(TRAINED))
def test_tritonclient_grpc_infer(
    served: tuple[ServiceProcess, int], grpc_client: triton_grpc.InferenceServerClient, name: str
) -> None:
    sequences, tensor = batch(name, [MAX_LEN, MAX_LEN], seed=22)
    tensor_in = triton_grpc.InferInput("sequence", list(tensor.shape), datatype(name))
    tensor_in.set_data_from_numpy(tensor)
    result = grpc_client.infer(name, [tensor_in], request_id="r1")
    np.testing.assert_array_equal(result.as_numpy("probability"), native(served[0], name, sequences).reshape(-1, 1))
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == (name, "1", "r1")


def test_triton_clients_see_protocol_errors(
    http_client: triton_http.InferenceServerClient, grpc_client: triton_grpc.InferenceServerClient
) -> None:
    wrong_type = np.zeros((1, 3, 1), np.float64)
    for module, client, code in ((triton_http, http_client, "400"), (triton_grpc, grpc_client, "INVALID_ARGUMENT")):
        tensor = module.InferInput("sequence", list(wrong_type.shape), "FP64")
        tensor.set_data_from_numpy(wrong_type)
        with pytest.raises(InferenceServerException) as raised:
            client.infer("m-lstm", [tensor])
        assert "data-type is 'FP64', but model 'm-lstm' expects 'FP32'" in raised.value.message()
        assert code in str(raised.value.status())
        named = module.InferInput("input0", [1, 3, 1], "FP32")
        named.set_data_from_numpy(np.zeros((1, 3, 1), np.float32))
        with pytest.raises(InferenceServerException, match="unexpected inference input 'input0'"):
            client.infer("m-lstm", [named])
    tensor = triton_grpc.InferInput("sequence", [1, 3, 1], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 3, 1), np.float32))
    with pytest.raises(InferenceServerException) as raised:
        grpc_client.infer("nope", [tensor])
    assert "NOT_FOUND" in str(raised.value.status()) and "nope" in raised.value.message()
    assert not http_client.is_model_ready("nope")
    with pytest.raises(InferenceServerException, match="nope"):
        grpc_client.is_model_ready("nope")


# --- Triton sequences: HTTP, gRPC, gRPC stream -----------------------------------------------------------


def step_tensor(module: Any, name: str, value: float) -> Any:
    shape = [1, 1] if name in TOKEN_NAMES else [1, 1, 1]
    tensor = module.InferInput("sequence", shape, datatype(name))
    tensor.set_data_from_numpy(np.full(shape, value, np.int32 if name in TOKEN_NAMES else np.float32))
    return tensor


def sequence_case(served: tuple[ServiceProcess, int], trained_dir: Path, name: str, seed: int) -> tuple[list[float], list[float]]:
    """A max_len sequence of the model's values and the Keras stateful model's probability after each."""
    meta = served[0].http.get(f"/models/{name}").json()
    values = sample_sequences(name, [meta["max_len"]], seed=seed)[0]
    return values, keras_stateful_probabilities(trained_dir, meta, values)


def run_sequence(infer: Callable[..., Any], name: str, values: list[float], sequence_id: int | str) -> list[float]:
    last = len(values) - 1
    results = [
        infer(name, value, sequence_id=sequence_id, sequence_start=t == 0, sequence_end=t == last)
        for t, value in enumerate(values)
    ]
    return [float(r.as_numpy("probability").reshape(-1)[0]) for r in results]


@pytest.mark.parametrize("transport", ["http", "grpc"])
@pytest.mark.parametrize("name", SEQUENCE_MODELS)
def test_sequence_over_unary_calls_equals_keras_stateful_model(
    served: tuple[ServiceProcess, int], trained_dir: Path, request: pytest.FixtureRequest, transport: str, name: str
) -> None:
    module = triton_http if transport == "http" else triton_grpc
    client = request.getfixturevalue(f"{transport}_client")
    values, expected = sequence_case(served, trained_dir, name, seed=31)

    def infer(model: str, value: float, **sequence: Any) -> Any:
        return client.infer(model, [step_tensor(module, model, value)], **sequence)

    sequence_id = 1001 if transport == "http" else "grpc-seq"  # integer and string ids
    np.testing.assert_allclose(run_sequence(infer, name, values, sequence_id), expected, atol=1e-5)
    with pytest.raises(InferenceServerException, match="START"):  # the end closed it
        infer(name, values[0], sequence_id=sequence_id)


@pytest.mark.parametrize("name", SEQUENCE_MODELS)
def test_sequence_over_grpc_stream_equals_keras_stateful_model(
    served: tuple[ServiceProcess, int], trained_dir: Path, name: str
) -> None:
    values, expected = sequence_case(served, trained_dir, name, seed=33)
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client = triton_grpc.InferenceServerClient(f"127.0.0.1:{served[1]}")
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        last = len(values) - 1
        for t, value in enumerate(values):
            client.async_stream_infer(
                name, [step_tensor(triton_grpc, name, value)], request_id=str(t),
                sequence_id=2002, sequence_start=t == 0, sequence_end=t == last,
            )
        # A request after the end: the stream answers its error and stays open.
        client.async_stream_infer(name, [step_tensor(triton_grpc, name, values[0])], request_id="late", sequence_id=2002)
        received = [answers.get(timeout=60) for _ in range(len(values) + 1)]
    finally:
        client.stop_stream()
        client.close()
    errors = [error for _, error in received[:-1] if error is not None]
    assert not errors, errors
    stepped = [float(result.as_numpy("probability").reshape(-1)[0]) for result, _ in received[:-1]]
    assert [result.get_response().id for result, _ in received[:-1]] == [str(t) for t in range(len(values))]
    np.testing.assert_allclose(stepped, expected, atol=1e-5)
    late_result, late_error = received[-1]
    assert late_result is None and "START" in late_error.message()


# --- the kserve SDK (in its own process: its protobuf modules clash with tritonclient's) ---------------


def test_kserve_sdk_clients_at_their_defaults(served: tuple[ServiceProcess, int]) -> None:
    service, grpc_port = served
    cases, expected = [], {}
    for name in TRAINED:
        sequences, tensor = batch(name, [MAX_LEN, MAX_LEN], seed=41)
        cases.append({"model": name, "datatype": datatype(name), "array": tensor.tolist()})
        expected[name] = native(service, name, sequences)
    spec = {"rest": service.url, "grpc": f"127.0.0.1:{grpc_port}", "cases": cases}
    script = Path(__file__).with_name("kserve_sdk_client.py")
    run = subprocess.run([sys.executable, str(script), json.dumps(spec)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["rest_v2"]["live"] and out["rest_v2"]["ready"] and out["grpc"]["live"] and out["grpc"]["ready"]
    for name in TRAINED:
        assert out["rest_v2"]["model_ready"][name] and out["grpc"]["model_ready"][name]
        for got in (out["rest_v2"]["binary"][name], out["rest_v2"]["json"][name], out["grpc"]["infer"][name]):
            np.testing.assert_array_equal(np.asarray(got, np.float32), expected[name])
        np.testing.assert_allclose(out["rest_v1"][name], expected[name], rtol=0, atol=1e-7)


# --- TF Serving's documented curl forms -----------------------------------------------------------------


def curl(*args: str) -> Any:
    run = subprocess.run(["curl", "-s", *args], capture_output=True, text=True, timeout=60, check=True)
    return json.loads(run.stdout)


def test_tf_serving_documented_curl_forms_verbatim(served: tuple[ServiceProcess, int]) -> None:
    """api_rest.md's examples with our host, model and values: no Content-Type is set (curl -d sends a form's)."""
    service = served[0]
    url = service.url
    sequences = sample_sequences("m-lstm", [MAX_LEN, 5], seed=51)
    expected = [[float(p)] for p in native(service, "m-lstm", sequences)]
    status = curl(f"{url}/v1/models/m-lstm")
    assert status["model_version_status"][0]["state"] == "AVAILABLE"
    metadata = curl(f"{url}/v1/models/m-lstm/metadata")
    assert "serving_default" in metadata["metadata"]["signature_def"]["signature_def"]
    instances = json.dumps({"instances": sequences})
    predicted = curl("-d", instances, "-X", "POST", f"{url}/v1/models/m-lstm:predict")
    np.testing.assert_allclose(predicted["predictions"], expected, atol=1e-7)
    versioned = curl("-X", "POST", f"{url}/v1/models/m-lstm/versions/1:predict", "-d", instances)
    np.testing.assert_allclose(versioned["predictions"], expected, atol=1e-7)
    columnar = curl("-d", json.dumps({"inputs": {"sequence": sequences}}), "-X", "POST", f"{url}/v1/models/m-lstm:predict")
    np.testing.assert_allclose(columnar["outputs"], expected, atol=1e-7)
    assert "error" in curl("-d", '{"instances": [1.0, 2.0, 5.0]}', "-X", "POST", f"{url}/v1/models/half_plus_two:predict")


# --- gRPC auth and limits (an in-process app with its own gRPC port) ------------------------------------


def test_grpc_auth_follows_api_key_all(app_client: Callable[..., Any], trained_dir: Path) -> None:
    port = free_port()
    app_client(trained_dir, grpc_port=port, api_key="s3cret", api_key_all=True)
    client = triton_grpc.InferenceServerClient(f"127.0.0.1:{port}")
    try:
        assert client.is_server_live() and client.is_server_ready()  # probes stay open, as /v2/health/*
        tensor = step_tensor(triton_grpc, "m-lstm", 0.5)
        for call in (partial(client.get_model_metadata, "m-lstm"), partial(client.infer, "m-lstm", [tensor])):
            with pytest.raises(InferenceServerException) as raised:
                call()
            assert "UNAUTHENTICATED" in str(raised.value.status())
            with pytest.raises(InferenceServerException, match="UNAUTHENTICATED|Bearer"):
                call(headers={"authorization": "Bearer wrong"})
            assert call(headers={"authorization": "Bearer s3cret"}) is not None
    finally:
        client.close()


def test_grpc_calls_are_counted_and_timed_by_method_and_status_code(
    app_client: Callable[..., Any], trained_dir: Path
) -> None:
    port = free_port()
    app = app_client(trained_dir, grpc_port=port)
    client = triton_grpc.InferenceServerClient(f"127.0.0.1:{port}")
    answers: queue.Queue[Any] = queue.Queue()
    try:
        assert client.is_server_live()
        client.infer("m-lstm", [step_tensor(triton_grpc, "m-lstm", 0.5)])
        with pytest.raises(InferenceServerException, match="NOT_FOUND"):
            client.infer("no-such-model", [step_tensor(triton_grpc, "m-lstm", 0.5)])
        client.start_stream(callback=lambda result, error: answers.put((result, error)))
        client.async_stream_infer("m-lstm", [step_tensor(triton_grpc, "m-lstm", 0.5)])
        assert answers.get(timeout=30)[1] is None
        client.stop_stream()
    finally:
        client.close()
    # A stream whose client goes away while it is open is counted too, once.
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        gone = threading.Event()

        def requests() -> Iterator[service_pb2.ModelInferRequest]:
            yield service_pb2.ModelInferRequest(model_name="no-such-model")
            gone.wait(10)

        call = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer(requests())
        assert "no-such-model" in next(call).error_message
        call.cancel()
        gone.set()

    def count(method: str, code: str) -> float | None:
        return _sample(app.get("/metrics").text, "lstm_serve_grpc_requests_total", f'{{code="{code}",method="{method}"}}')

    def streams() -> float:
        # A stream whose client went away ends OK or CANCELLED, whichever the server's gRPC sees first.
        return sum(count("ModelStreamInfer", code) or 0.0 for code in ("OK", "CANCELLED"))

    assert count("ServerLive", "OK") == 1
    assert count("ModelInfer", "OK") == 1
    assert count("ModelInfer", "NOT_FOUND") == 1
    deadline = time.monotonic() + 10  # the server counts a stream when it has seen its end, just after the client
    while streams() < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert streams() == 2 and count("ModelStreamInfer", "OK") >= 1
    text = app.get("/metrics").text
    assert _sample(text, "lstm_serve_grpc_request_duration_seconds_count", '{method="ModelInfer"}') == 2
    assert _sample(text, "lstm_serve_grpc_request_duration_seconds_sum", '{method="ModelInfer"}') > 0


def test_a_taken_grpc_port_stops_the_start(app_client: Callable[..., Any], tmp_path: Path) -> None:
    """A second service on the same GRPC_PORT fails to start rather than share the port (SO_REUSEPORT is off)."""
    port = free_port()
    first = app_client(tmp_path / "a", grpc_port=port)
    assert first.get("/v2/health/live").json() == {"live": True}
    with pytest.raises(RuntimeError, match=f"bind to address 127.0.0.1:{port}"):
        app_client(tmp_path / "b", grpc_port=port)


def test_sequence_continues_across_replicas_through_redis(trained_dir: Path, tmp_path: Path) -> None:
    """A Triton sequence lives in the configured session store: started over HTTP on one replica, continued over
    gRPC on the other, alternating, it still equals the Keras stateful model; its end on one closes it for both."""
    start, started = process_factory(tmp_path)
    prefix = f"lstm-serve-clients-{uuid.uuid4().hex}:"
    shared = {"SESSION_STORE": REDIS_URL, "SESSION_KEY_PREFIX": prefix, "DEMO_MODEL": "false", "LOG_LEVEL": "warning"}
    ports = [free_port(), free_port()]
    try:
        replicas = [start(trained_dir, f"replica-{i}", GRPC_PORT=str(port), **shared) for i, port in enumerate(ports)]
        for replica in replicas:
            replica.wait_ready()
        meta = replicas[0].http.get("/models/m-stateful").json()
        values = sample_sequences("m-stateful", [meta["max_len"]], seed=61)[0]
        expected = keras_stateful_probabilities(trained_dir, meta, values)
        http = triton_http.InferenceServerClient(replicas[0].url.removeprefix("http://"))
        grpc = triton_grpc.InferenceServerClient(f"127.0.0.1:{ports[1]}")
        try:
            last = len(values) - 1
            stepped = []
            for t, value in enumerate(values):  # even steps over HTTP to replica 0, odd ones over gRPC to replica 1
                client, module = (http, triton_http) if t % 2 == 0 else (grpc, triton_grpc)
                result = client.infer("m-stateful", [step_tensor(module, "m-stateful", value)], sequence_id=3003,
                                      sequence_start=t == 0, sequence_end=t == last)
                stepped.append(float(result.as_numpy("probability").reshape(-1)[0]))
            np.testing.assert_allclose(stepped, expected, atol=1e-5)
            for client, module in ((http, triton_http), (grpc, triton_grpc)):
                with pytest.raises(InferenceServerException, match="START"):
                    client.infer("m-stateful", [step_tensor(module, "m-stateful", 0.5)], sequence_id=3003)
        finally:
            http.close()
            grpc.close()
    finally:
        for process in started:
            process.kill()
        drop_redis_keys(REDIS_URL, prefix)
