"""Hostile clients against a real ``python -m service``: each attack is refused with the right status and
error code, changes nothing on disk, and (for bombs and huge declarations) costs little time and memory.

One process serves a copy of the session's trained models with ``API_KEY_ALL`` on (the client sends the
key) and short read timeouts, so slow-client attacks finish in seconds. Memory is the process's peak
resident size (``VmHWM``): what an attack makes the server allocate at any moment, even briefly.
"""

import io
import json
import math
import shutil
import socket
import struct
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h5py
import httpx
import keras
import pytest

from tests.process import ServiceProcess, process_factory
from tests.test_bad_input import snapshot

KEY = "hostile-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.5
#: What a refused upload may cost (issue 10); timings take the best of a few tries, as the machine is shared.
REFUSAL_SECONDS = 0.5
REFUSAL_RSS = 50 * 1024 * 1024
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def model_dir(trained_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("attacks") / "models"
    shutil.copytree(trained_dir, copy, ignore=shutil.ignore_patterns(".jobs"))
    return copy


@pytest.fixture(scope="module")
def service(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    workdir = tmp_path_factory.mktemp("attacks-cwd")
    start, _ = process_factory(workdir)
    server = start(
        model_dir,
        DEMO_MODEL="false",
        API_KEY=KEY,
        API_KEY_ALL="true",
        HEADER_READ_TIMEOUT_S=str(HEADER_TIMEOUT_S),
        BODY_READ_TIMEOUT_S=str(BODY_TIMEOUT_S),
    )
    try:
        server.wait_ready()
        server.http.headers.update(AUTH)
        yield server
    finally:
        server.kill()


@pytest.fixture
def unchanged(model_dir: Path, service: ServiceProcess) -> Iterator[None]:
    before = snapshot(model_dir)
    yield
    assert snapshot(model_dir) == before
    assert service.process.poll() is None, service.log_tail()


def peak_rss(service: ServiceProcess) -> int:
    """The process's peak resident set size so far (bytes)."""
    for line in Path(f"/proc/{service.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc")


def cheaply(service: ServiceProcess, send: Callable[[], httpx.Response], seconds: float = REFUSAL_SECONDS, rss: int = REFUSAL_RSS) -> httpx.Response:
    """Send an attack (up to 3 times, for timing on a shared machine); assert its time and peak-RSS growth."""
    best = math.inf
    for _ in range(3):
        peak = peak_rss(service)
        started = time.perf_counter()
        response = send()
        best = min(best, time.perf_counter() - started)
        growth = peak_rss(service) - peak
        assert growth < rss, f"peak RSS grew by {growth / MIB:.1f} MiB"
        if best < seconds:
            break
    assert best < seconds, f"took {best:.3f} s"
    return response


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    assert "Traceback" not in error["message"]
    return error


# --- crafted .keras files ----------------------------------------------------------------------------


def keras_bytes(model: keras.Model, folder: Path) -> bytes:
    path = folder / "model.keras"
    model.save(path)
    return path.read_bytes()


def lstm_model(units: int = 4) -> keras.Model:
    inputs = keras.Input((7, 1))
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(keras.layers.LSTM(units)(inputs)))


def rezip(content: bytes, **members: bytes) -> bytes:
    """The same archive with some members replaced (``config_json`` names ``config.json``)."""
    replaced = {name.replace("_", "."): data for name, data in members.items()}
    source = zipfile.ZipFile(io.BytesIO(content))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as target:
        for info in source.infolist():
            target.writestr(info.filename, replaced.get(info.filename, source.read(info.filename)))
    return buffer.getvalue()


def with_config(content: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    config = json.loads(zipfile.ZipFile(io.BytesIO(content)).read("config.json"))
    change(config)
    return rezip(content, config_json=json.dumps(config).encode())


def deflate_bomb(member: str, size: int) -> bytes:
    """A zip whose one member really inflates to ``size`` zero bytes, built without compressing ``size`` bytes:
    deflate blocks ended by a full flush do not refer back, so one block of zeros can be repeated."""
    chunk = bytes(MIB)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    assert compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH) == block
    data = block * (size // MIB) + compressor.flush()
    crc = 0
    for _ in range(size // MIB):
        crc = zlib.crc32(chunk, crc)
    name = member.encode()
    local = struct.pack("<4s2B4HL2L2H", b"PK\x03\x04", 20, 0, 0, 8, 0, 0x21, crc, len(data), size, len(name), 0)
    central = struct.pack(
        "<4s4B4HL2L5H2L", b"PK\x01\x02", 20, 3, 20, 0, 0, 8, 0, 0x21, crc, len(data), size, len(name), 0, 0, 0, 0, 0, 0
    )
    directory = central + name
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(directory), len(local) + len(name) + len(data), 0)
    bomb = local + name + data + directory + end
    assert zipfile.ZipFile(io.BytesIO(bomb)).getinfo(member).file_size == size
    return bomb


def many_members(count: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(count):
            archive.writestr(f"m{i}", b"")
    return buffer.getvalue()


def huge_weights(content: bytes) -> bytes:
    """Weights declaring a 400 MB dataset that takes a few kilobytes (chunked, compressed, never written)."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as weights:
        weights.create_dataset("layers/lstm/cell/vars/0", shape=(100_000_000,), dtype="float32", chunks=(1_000_000,), compression="gzip")
    return rezip(content, model_weights_h5=buffer.getvalue())


def unbuilt_embedding_model(folder: Path) -> bytes:
    """The seed's embedding model written literally in Keras 3 and saved before training: never built."""
    model = keras.Sequential(
        [keras.layers.Embedding(100, 128), keras.layers.LSTM(10), keras.layers.Dense(1, activation="sigmoid")]
    )
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    return keras_bytes(model, folder)


def chain(*layers: keras.layers.Layer, shape: tuple[int, ...] = (7, 1), dtype: str = "float32") -> keras.Model:
    inputs = x = keras.Input(shape, dtype=dtype)
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, x)


def stateful_chain(*layers: keras.layers.Layer, batch_shape: tuple[int, ...]) -> keras.Model:
    inputs = x = keras.Input(batch_shape=batch_shape)
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, x)


def upload(service: ServiceProcess, content: bytes, name: str = "up", **form: str) -> httpx.Response:
    return service.http.post(f"/models/{name}/load", files={"file": ("model.keras", content)}, data=form)


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return keras_bytes(lstm_model(), tmp_path_factory.mktemp("good"))


# --- uploads: bombs and huge declarations, refused cheaply ----------------------------------------------


def add_members(content: bytes, members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO(content)
    with zipfile.ZipFile(buffer, "a") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def bomb_in(good: bytes, member: str, size: int) -> bytes:
    """A complete-looking .keras whose ``member`` is a deflate bomb of ``size`` bytes."""
    source = zipfile.ZipFile(io.BytesIO(good))
    others = {name: source.read(name) for name in source.namelist() if name != member}
    return add_members(deflate_bomb(member, size), others)


#: attack -> (the crafted file from a good one, a fragment of the refusal's message)
BOMBS: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "config-inflates-to-1-GiB": (lambda good: bomb_in(good, "config.json", 1024 * MIB), "unpacks to"),
    "weights-inflate-to-1-GiB": (lambda good: bomb_in(good, "model.weights.h5", 1024 * MIB), "unpacks to"),
    "ratio-over-the-cap": (lambda good: bomb_in(good, "model.weights.h5", 32 * MIB), "times larger"),
    "ten-thousand-members": (lambda good: many_members(10_000), "declares 10000 members"),
    "member-named-../evil": (lambda good: add_members(good, {"../evil": b"x"}), "members"),
    "LSTM(100000)": (lambda good: with_config(good, lambda c: c["config"]["layers"][1]["config"].update(units=100_000)), "parameters"),
    "deeply-nested-json": (lambda good: rezip(good, config_json=b"[" * 200_000 + b"]" * 200_000), "nested too deeply"),
    "nested-past-the-depth-cap": (
        lambda good: rezip(good, config_json=json.dumps({"config": {"x": json.loads("[" * 40 + "]" * 40)}}).encode()),
        "nested too deeply",
    ),
    "weights-declare-400-MB": (huge_weights, "declares 400,000,000 bytes"),
}


@pytest.mark.parametrize("attack", list(BOMBS))
def test_bombs_and_huge_declarations_are_refused_before_anything_is_built(
    service: ServiceProcess, unchanged: None, good: bytes, attack: str
) -> None:
    craft, reason = BOMBS[attack]
    content = craft(good)
    assert len(content) < 2 * MIB
    response = cheaply(service, lambda: upload(service, content))
    error = error_of(response, 422, "invalid_model_file")
    assert error["details"]["field"] == "file"
    assert reason in error["message"], error
    assert error_of(service.http.get("/models/up"), 404, "model_not_found")


# --- uploads: anything but exactly one of the five -----------------------------------------------------


NOT_THE_FIVE: dict[str, tuple[Callable[[], keras.Model], dict[str, Any]]] = {
    "return_sequences": (
        lambda: chain(keras.layers.LSTM(3, return_sequences=True), keras.layers.Dense(1, activation="sigmoid")),
        {"option": "return_sequences", "expected": False, "got": True},
    ),
    "TimeDistributed(Dropout)": (
        lambda: chain(keras.layers.TimeDistributed(keras.layers.Dropout(0.1)), keras.layers.LSTM(3), keras.layers.Dense(1, activation="sigmoid")),
        {"option": "class_name", "expected": "Dense", "got": "Dropout"},
    ),
    "relu-LSTM": (
        lambda: chain(keras.layers.LSTM(3, activation="relu"), keras.layers.Dense(1, activation="sigmoid")),
        {"option": "activation", "expected": "tanh", "got": "relu"},
    ),
    "tanh-head": (
        lambda: chain(keras.layers.LSTM(3), keras.layers.Dense(1, activation="tanh")),
        {"option": "activation", "expected": ["sigmoid", "linear"], "got": "tanh"},
    ),
    "merge_mode-sum": (
        lambda: chain(keras.layers.Embedding(10, 4), keras.layers.Bidirectional(keras.layers.LSTM(3), merge_mode="sum"),
                      keras.layers.Dense(1, activation="sigmoid"), shape=(7,), dtype="int32"),
        {"option": "merge_mode", "expected": "concat", "got": "sum"},
    ),
    # Sequential: as a Functional model, Keras adds a NotEqual layer for the mask (refused as not a chain).
    "mask_zero": (
        lambda: keras.Sequential([keras.Input((7,), dtype="int32"), keras.layers.Embedding(10, 4, mask_zero=True),
                                  keras.layers.LSTM(3), keras.layers.Dense(1, activation="sigmoid")]),
        {"option": "mask_zero", "expected": False, "got": True},
    ),
    # Several features per step are served (n_features); several steps per stateful call are not.
    "three-steps-per-stateful-call": (
        lambda: stateful_chain(keras.layers.LSTM(3, stateful=True), keras.layers.Dense(1, activation="sigmoid"),
                               batch_shape=(1, 3, 1)),
        {"option": "input shape", "expected": [1, 1, "n_features"], "got": "[1, 3, 1]"},
    ),
    "softmax-over-one-class": (
        lambda: chain(keras.layers.LSTM(3), keras.layers.Dense(1, activation="softmax")),
        {"option": "activation", "expected": ["sigmoid", "linear"], "got": "softmax"},
    ),
}


@pytest.mark.parametrize("case", list(NOT_THE_FIVE))
def test_models_that_only_look_like_one_of_the_five_are_a_422_naming_the_difference(
    service: ServiceProcess, unchanged: None, tmp_path: Path, case: str
) -> None:
    build, expected = NOT_THE_FIVE[case]
    response = cheaply(service, lambda: upload(service, keras_bytes(build(), tmp_path)), seconds=2.0)
    error = error_of(response, 422, "invalid_model_file")
    details = error["details"]
    assert details["field"] == "file"
    assert {key: details[key] for key in expected} == expected, details
    assert str(expected["got"]) in error["message"]


def test_a_model_saved_before_it_was_built_says_how_to_fix_it(service: ServiceProcess, unchanged: None, tmp_path: Path) -> None:
    response = cheaply(service, lambda: upload(service, unbuilt_embedding_model(tmp_path)), seconds=2.0)
    error = error_of(response, 422, "model_not_built")
    assert error["details"]["field"] == "file"
    assert 'keras.Input(shape=(max_len,), dtype="int32")' in error["message"]
    assert "model.build((None, max_len))" in error["message"]
    assert error["details"]["fix"] in error["message"]


def test_an_unknown_form_field_is_a_422_naming_it(service: ServiceProcess, unchanged: None, good: bytes) -> None:
    response = upload(service, good, architechture="lstm")
    error = error_of(response, 422, "validation_error")
    assert error["details"]["field"] == "architechture"
    assert "file" in error["details"]["expected"] and "architecture" in error["details"]["expected"]


def test_a_good_upload_still_works(service: ServiceProcess, model_dir: Path, tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    response = upload(service, keras_bytes(lstm_model(), tmp_path), name="fine", architecture="lstm")
    assert response.status_code == 201, response.text
    assert response.json()["params"] == {"max_len": 7, "units": 4}
    assert service.http.delete("/models/fine").status_code == 204


# --- training bodies: caps hold whatever the route ------------------------------------------------------


def train_body(sequences: list[list[float]], **extra: Any) -> dict[str, Any]:
    return {"architecture": "lstm", "data": {"sequences": sequences, "labels": [i % 2 for i in range(len(sequences))]}, **extra}


TRAINING: dict[str, tuple[Callable[[], dict[str, Any]], str, int]] = {
    # max_len taken from the data may not skip the sequence-length cap (10,000 by default)
    "10001-steps": (lambda: train_body([[0.0] * 10_001, [0.5]]), "data.sequences[0]", 10_001),
    # the 3.9 MB ragged body that once tried to allocate a (300001, 300000) array
    "ragged-300001x300000": (lambda: train_body([[0] * 300_000] + [[0]] * 300_000), "data.sequences[0]", 300_000),
    # within the length cap, but 6,001 sequences padded to 10,000 steps exceed MAX_PADDED_VALUES
    "padded-size": (lambda: train_body([[0.0] * 10_000] + [[0.5]] * 6_000), "data.sequences", 60_010_000),
    "max_len-param": (lambda: {"architecture": "lstm", "dataset": "noisy_trend", "params": {"max_len": 20_000}}, "params.max_len", 20_000),
}


@pytest.mark.parametrize("case", list(TRAINING))
def test_training_caps_are_checked_before_any_array_exists(service: ServiceProcess, unchanged: None, case: str) -> None:
    build, field, got = TRAINING[case]
    body = json.dumps(build()).encode()
    jobs_before = service.http.get("/jobs").json()
    send = lambda: service.http.post("/models/capped/train", content=body, headers={"content-type": "application/json"})  # noqa: E731
    # Parsing a 3.9 MB body into Python lists is most of the cost; the refused array would have been 720 GB.
    error = error_of(cheaply(service, send, seconds=3.0, rss=200 * MIB), 422, "invalid_input")
    assert (error["details"]["field"], error["details"]["got"]) == (field, got)
    assert service.http.get("/jobs").json() == jobs_before


# --- numbers: one rule, every route, each in its own error format -----------------------------------------

HOSTILE_NUMBERS = ["1e39", "-1e39", "9" * 400, "-" + "9" * 400, "9" * 5000]


@pytest.mark.parametrize("number", HOSTILE_NUMBERS, ids=["1e39", "-1e39", "400-digits", "-400-digits", "5000-digits"])
def test_hostile_numbers_are_refused_alike_on_every_route(service: ServiceProcess, unchanged: None, number: str) -> None:
    native = service.http.post("/models/m-lstm/predict", content=f'{{"sequences": [[0.5, {number}]]}}',
                               headers={"content-type": "application/json"})
    error = error_of(native, 422, "validation_error")
    assert error["details"]["field"] in ("sequences[0][1]", "body")
    compat = {
        "/v1/models/m-lstm:predict": f'{{"instances": [[0.5, {number}]]}}',
        "/v1/models/m-lstm/versions/1:predict": f'{{"inputs": [[0.5, {number}]]}}',
        "/v2/models/m-lstm/infer": f'{{"inputs": [{{"name": "sequence", "shape": [1, 2], "datatype": "FP32", "data": [0.5, {number}]}}]}}',
    }
    for path, body in compat.items():
        response = service.http.post(path, content=body, headers={"content-type": "application/json"})
        assert response.status_code == 400, (path, response.text)
        message = response.json()["error"]
        assert isinstance(message, str) and "Traceback" not in message
        if len(number.lstrip("-")) <= 400:  # parsed: the domain rule names the value; 5000 digits fail JSON parsing
            assert "float32" in message and "[1]" in message, (path, message)


# --- auth covers what it says ------------------------------------------------------------------------------


def test_api_key_all_guards_metrics_and_docs_but_not_health(service: ServiceProcess) -> None:
    bare = httpx.Client(base_url=service.url, timeout=10)
    with bare:
        for path in ("/metrics", "/openapi.json", "/docs", "/redoc", "/models", "/", "/v1/models/m-lstm", "/v2/models/m-lstm"):
            response = bare.get(path)
            assert response.status_code == 401, (path, response.text)
            assert bare.get(path, headers=AUTH).status_code == 200, path
        metrics = bare.get("/metrics", headers=AUTH).text
        assert 'lstm_serve_http_requests_total{method="GET",route="/metrics",status="401"}' in metrics
        for path in ("/health/live", "/health/ready", "/v2/health/live", "/v2/health/ready"):
            assert bare.get(path).status_code == 200, path


# --- slow and greedy clients -------------------------------------------------------------------------------


def _response_head(sock: socket.socket) -> bytes:
    sock.settimeout(5)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_slowloris_heads_and_unfinished_bodies_do_not_block_other_clients(service: ServiceProcess) -> None:
    import select

    head = f"POST /models/m-lstm/predict HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n".encode()
    slow = [socket.create_connection(("127.0.0.1", service.port)) for _ in range(20)]
    unfinished = []
    for _ in range(5):  # a whole head, then a body that never finishes
        sock = socket.create_connection(("127.0.0.1", service.port))
        sock.sendall(head + b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n" + b'{"sequences": [[')
        unfinished.append(sock)
    answers: dict[socket.socket, bytes] = {}
    latencies = []
    started = time.monotonic()
    sent = 0
    while time.monotonic() - started < 3 * max(HEADER_TIMEOUT_S, BODY_TIMEOUT_S) and len(answers) < len(slow) + len(unfinished):
        readable, _, _ = select.select([s for s in slow + unfinished if s not in answers], [], [], 0)
        for sock in readable:
            answers[sock] = _response_head(sock)
        if sent < len(head):  # one more byte of the head on every slow connection still open
            for sock in slow:
                if sock not in answers:
                    sock.send(head[sent : sent + 1])
            sent += 1
        t0 = time.perf_counter()
        response = service.http.post("/models/m-lstm/predict", json={"sequences": [[0.1, 0.2]]})
        latencies.append(time.perf_counter() - t0)
        assert response.status_code == 200, response.text
        time.sleep(0.1)
    for sock in slow + unfinished:
        sock.close()
    assert len(latencies) >= 10
    assert max(latencies) < 1.0, latencies  # other clients were never blocked
    assert len(answers) == len(slow) + len(unfinished), "some slow connection was never closed"
    for sock, answer in answers.items():
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert b'"code": "request_timeout"' in answer.split(b"\r\n\r\n", 1)[1] or b"connection: close" in answer


def test_an_oversized_head_is_431(service: ServiceProcess) -> None:
    with socket.create_connection(("127.0.0.1", service.port)) as sock:
        try:
            sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may close before it has read everything; its answer is already on the way
        answer = _response_head(sock)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert service.http.get("/health/live").status_code == 200


def test_a_body_left_unfinished_after_an_early_answer_gets_no_second_answer(service: ServiceProcess) -> None:
    """413 is answered before the body is read; the body deadline then only closes the connection."""
    with socket.create_connection(("127.0.0.1", service.port)) as sock:
        sock.sendall(
            f"POST /models/m-lstm/predict HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n".encode()
            + b"Content-Type: application/json\r\nContent-Length: 20000000\r\n\r\n{"
        )
        sock.settimeout(BODY_TIMEOUT_S + 10)
        received = b""
        while chunk := sock.recv(65536):  # until the server closes the connection
            received += chunk
    assert received.startswith(b"HTTP/1.1 413 "), received[:200]
    assert received.count(b"HTTP/1.1 ") == 1, received
