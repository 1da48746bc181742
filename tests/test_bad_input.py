"""A matrix of bad inputs: each is a clear 4xx with ``{"error": {"code", "message", "details"}}`` whose details
name the offending field, and none changes a single file under ``MODEL_DIR``.

The app serves a private copy of the session's trained models (so writes would be noticed, and could not
harm other tests); every case compares the folder's file list, sizes and mtimes before and after.
"""

import io
import json
import shutil
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import keras
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from tests.conftest import make_settings
from tests.test_models import lstm_model, save, upload
from tests.test_validation import assert_error

FLOAT_MODEL = "m-lstm"  # max_len 30 (noisy_trend)
TOKEN_MODEL = "m-emb"  # vocab_size 100
SESSION_MODEL = "m-lstm"
BODY_LIMIT = 64 * 1024

Snapshot = dict[str, tuple[int, int]]


def snapshot(folder: Path) -> Snapshot:
    """Every file and folder under ``folder`` with its size and mtime (ns)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def model_dir(trained_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("bad-input") / "models"
    shutil.copytree(trained_dir, copy)
    return copy


@pytest.fixture(scope="module")
def api(model_dir: Path) -> Iterator[TestClient]:
    app = create_app(make_settings(model_dir, max_body_bytes=BODY_LIMIT))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def unchanged(model_dir: Path, api: TestClient) -> Iterator[None]:
    """Asserts after the test that nothing under MODEL_DIR was created, removed or rewritten."""
    before = snapshot(model_dir)
    yield
    after = snapshot(model_dir)
    assert after == before, {"added": sorted(set(after) - set(before)), "removed": sorted(set(before) - set(after))}


Request = Callable[[TestClient], httpx.Response]


def raw(method: str, path: str, text: str | bytes, content_type: str = "application/json") -> Request:
    body = text.encode() if isinstance(text, str) else text
    return lambda c: c.request(method, path, content=body, headers={"content-type": content_type})


def predict(model: str, sequences: Any, **extra: Any) -> Request:
    return lambda c: c.post(f"/models/{model}/predict", json={"sequences": sequences, **extra})


def train(name: str, **body: Any) -> Request:
    return lambda c: c.post(f"/models/{name}/train", json=body)


GOOD_TRAIN = {"architecture": "lstm", "data": {"sequences": [[0.1, 0.2], [0.3, 0.4]], "labels": [0, 1]}, "epochs": 1}

# (id, request, status, code, field)
CASES: list[tuple[str, Request, int, str, str]] = [
    # Non-finite numbers: JSON has no NaN/Infinity, but Python's parser accepts them; 1e400 overflows to inf.
    ("nan", raw("POST", f"/models/{FLOAT_MODEL}/predict", '{"sequences": [[0.1, NaN]]}'), 422, "validation_error", "sequences[0][1]"),
    ("inf", raw("POST", f"/models/{FLOAT_MODEL}/predict", '{"sequences": [[Infinity]]}'), 422, "validation_error", "sequences[0][0]"),
    ("-inf", raw("POST", f"/models/{FLOAT_MODEL}/predict", '{"sequences": [[0.5], [-Infinity]]}'), 422, "validation_error", "sequences[1][0]"),
    ("overflow", raw("POST", f"/models/{FLOAT_MODEL}/predict", '{"sequences": [[1e400]]}'), 422, "validation_error", "sequences[0][0]"),
    ("nan-in-training", raw("POST", "/models/new/train", '{"data": {"sequences": [[NaN], [1]], "labels": [0, 1]}}'), 422, "validation_error", "data.sequences[0][0]"),
    ("nan-step", raw("POST", "/sessions/whatever/step", '{"values": [NaN]}'), 422, "validation_error", "values[0]"),
    # Strings, booleans and nulls where numbers belong.
    ("string-number", predict(FLOAT_MODEL, [[0.1, "0.2"]]), 422, "validation_error", "sequences[0][1]"),
    ("bool-number", predict(FLOAT_MODEL, [[True]]), 422, "validation_error", "sequences[0][0]"),
    ("null-number", predict(FLOAT_MODEL, [[0.1, None]]), 422, "validation_error", "sequences[0][1]"),
    ("string-epochs", train("new", **{**GOOD_TRAIN, "epochs": "5"}), 422, "validation_error", "epochs"),
    ("string-version", predict(FLOAT_MODEL, [[0.1]], version="1"), 422, "validation_error", "version"),
    ("string-step", raw("POST", "/sessions/whatever/step", '{"values": ["0.1"]}'), 422, "validation_error", "values[0]"),
    # Shapes: nested too deep, too flat, ragged inner dimensions on a token model.
    ("too-deep", predict(FLOAT_MODEL, [[[1]]]), 422, "validation_error", "sequences[0][0]"),
    ("too-flat", predict(FLOAT_MODEL, [0.1, 0.2]), 422, "validation_error", "sequences[0]"),
    ("token-list-in-sequence", predict(TOKEN_MODEL, [[1, [2, 3], 4]]), 422, "validation_error", "sequences[0][1]"),
    ("sequences-not-a-list", predict(FLOAT_MODEL, "0.1"), 422, "validation_error", "sequences"),
    # Token ids: negative, at or past vocab_size, fractional.
    ("negative-token", predict(TOKEN_MODEL, [[1, 2, -1]]), 422, "invalid_input", "sequences[0][2]"),
    ("token-at-vocab", predict(TOKEN_MODEL, [[100]]), 422, "invalid_input", "sequences[0][0]"),
    ("token-past-vocab", predict(TOKEN_MODEL, [[3], [5, 10**9]]), 422, "invalid_input", "sequences[1][1]"),
    ("fractional-token", predict(TOKEN_MODEL, [[1.5]]), 422, "invalid_input", "sequences[0][0]"),
    # Empty things.
    ("empty-batch", predict(FLOAT_MODEL, []), 422, "validation_error", "sequences"),
    ("empty-sequence", predict(FLOAT_MODEL, [[0.1], []]), 422, "invalid_input", "sequences[1]"),
    ("empty-step", raw("POST", "/sessions/whatever/step", '{"values": []}'), 422, "validation_error", "values"),
    ("empty-body", raw("POST", f"/models/{FLOAT_MODEL}/predict", ""), 422, "validation_error", "body"),
    ("missing-sequences", predict(FLOAT_MODEL, [[0.1]], sequences_=1), 422, "validation_error", "sequences_"),
    ("too-long", predict(FLOAT_MODEL, [[0.1] * 31]), 422, "invalid_input", "sequences[0]"),
    ("bad-truncate", predict(FLOAT_MODEL, [[0.1]], truncate="middle"), 422, "validation_error", "truncate"),
    ("version-zero", predict(FLOAT_MODEL, [[0.1]], version=0), 422, "validation_error", "version"),
    # Names: an encoded '../x' cannot be a name (no route), upper case and 200 characters fail the pattern.
    ("dotdot-name", lambda c: c.post("/models/..%2Fx/predict", json={"sequences": [[0.1]]}), 404, "not_found", ""),
    ("dotdot-name-train", lambda c: c.post("/models/%2E%2E%2Fx/train", json=GOOD_TRAIN), 404, "not_found", ""),
    ("dotdot-in-name", lambda c: c.post("/models/..x/train", json=GOOD_TRAIN), 422, "validation_error", "name"),
    ("upper-case-name", train("BadName", **GOOD_TRAIN), 422, "validation_error", "name"),
    ("long-name", train("a" * 200, **GOOD_TRAIN), 422, "validation_error", "name"),
    ("long-name-delete", lambda c: c.delete("/models/" + "a" * 200), 422, "validation_error", "name"),
    ("bad-keep-best-as", lambda c: c.post("/compare", json={"dataset": "noisy_trend", "keep_best_as": "../x"}), 422, "validation_error", "keep_best_as"),
    # Content types and malformed JSON.
    ("text-plain", raw("POST", f"/models/{FLOAT_MODEL}/predict", '{"sequences": [[0.1]]}', "text/plain"), 422, "validation_error", "body"),
    ("form-data", lambda c: c.post(f"/models/{FLOAT_MODEL}/predict", data={"sequences": "[[0.1]]"}), 422, "validation_error", "body"),
    ("form-to-train", lambda c: c.post("/models/new/train", data={"dataset": "noisy_trend"}), 422, "validation_error", "body"),
    ("malformed-json", raw("POST", f"/models/{FLOAT_MODEL}/predict", '{"sequences": [[0.1]]'), 422, "validation_error", "body"),
    ("not-utf8", raw("POST", f"/models/{FLOAT_MODEL}/predict", b"\xff\xfe{\x00"), 422, "validation_error", "body"),
    ("json-not-object", raw("POST", f"/models/{FLOAT_MODEL}/predict", "[[0.1]]"), 422, "validation_error", "body"),
    ("train-unknown-field", train("new", **GOOD_TRAIN, learning_rate=0.1), 422, "validation_error", "learning_rate"),
    ("train-too-many-epochs", train("new", **{**GOOD_TRAIN, "epochs": 10**6}), 422, "invalid_input", "epochs"),
    ("train-label-2", train("new", architecture="lstm", data={"sequences": [[0.1], [0.2]], "labels": [0, 2]}), 422, "validation_error", "data.labels[1]"),
    ("train-token-past-vocab", train("new", architecture="embedding_lstm", params={"vocab_size": 10}, data={"sequences": [[1], [10]], "labels": [0, 1]}), 422, "invalid_input", "data.sequences[1][0]"),
]


@pytest.mark.parametrize(("request_", "status", "code", "field"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_a_clear_4xx_and_changes_nothing(
    api: TestClient, unchanged: None, request_: Request, status: int, code: str, field: str
) -> None:
    response = request_(api)
    assert response.headers["content-type"].startswith("application/json"), response.text
    error = assert_error(response, status, code)
    if field:
        assert error["details"].get("field") == field, error
    else:
        assert error["details"], error  # no route: the details say which path and method
    assert "Traceback" not in error["message"]


def test_sequence_count_cap_and_a_large_allowed_batch(
    app_client: Callable[..., TestClient], model_dir: Path, unchanged: None
) -> None:
    api = app_client(model_dir)  # the default limits: MAX_SEQUENCES_PER_REQUEST 10,000, MAX_BODY_BYTES 10 MiB
    allowed = [[0.01 * (i % 100)] * 5 for i in range(10_000)]
    response = api.post(f"/models/{FLOAT_MODEL}/predict", json={"sequences": allowed})
    assert response.status_code == 200, response.text[:500]
    assert len(response.json()["predictions"]) == 10_000

    response = api.post(f"/models/{FLOAT_MODEL}/predict", json={"sequences": allowed + [[0.5]]})
    error = assert_error(response, 422, "invalid_input", "sequences")
    assert error["details"]["got"] == 10_001


def test_body_over_the_limit_is_413_with_and_without_content_length(api: TestClient, unchanged: None) -> None:
    big = json.dumps({"sequences": [[0.5] * 30] * 1000}).encode()
    assert len(big) > BODY_LIMIT
    with_length = api.post(f"/models/{FLOAT_MODEL}/predict", content=big, headers={"content-type": "application/json"})
    assert_error(with_length, 413, "payload_too_large")

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(big), 4096):
            yield big[start : start + 4096]

    chunked = api.post(f"/models/{FLOAT_MODEL}/predict", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in chunked.request.headers
    assert chunked.request.headers["transfer-encoding"] == "chunked"
    assert_error(chunked, 413, "payload_too_large")

    upload_too_big = api.post("/models/big/load", files={"file": ("m.keras", b"x" * (BODY_LIMIT + 1))})
    assert_error(upload_too_big, 413, "payload_too_large")


# --- uploads ----------------------------------------------------------------------------------------


def _zip_without_a_model() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("config.json", "{}")
    return buffer.getvalue()


@pytest.mark.parametrize("content", [b"definitely not a zip", b"", b"PK\x03\x04truncated"])
def test_upload_that_is_not_a_zip(api: TestClient, unchanged: None, content: bytes) -> None:
    error = assert_error(upload(api, "up", content), 422, "invalid_model_file", "file")
    assert "zip" in error["message"]


def test_upload_zip_without_a_model(api: TestClient, unchanged: None) -> None:
    assert_error(upload(api, "up", _zip_without_a_model()), 422, "invalid_model_file", "file")


def test_upload_truncated(api: TestClient, unchanged: None, tmp_path: Path) -> None:
    content = save(lstm_model(), tmp_path)
    for cut in (len(content) // 2, len(content) - 30):
        assert_error(upload(api, "up", content[:cut]), 422, "invalid_model_file", "file")


def test_upload_of_the_wrong_architecture(api: TestClient, unchanged: None, tmp_path: Path) -> None:
    content = save(lstm_model(), tmp_path)
    error = assert_error(upload(api, "up", content, architecture="embedding_bilstm"), 422, "invalid_model_file", "architecture")
    assert error["details"]["expected"] == "lstm"
    assert_error(upload(api, "up", content, architecture="no_such_arch"), 422, "validation_error", "architecture")


def test_upload_without_a_file_field(api: TestClient, unchanged: None) -> None:
    response = api.post("/models/up/load", data={"architecture": "lstm"})
    assert_error(response, 422, "validation_error", "file")


def test_upload_with_a_lambda_layer_is_refused_and_never_run(api: TestClient, model_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "lambda-ran"
    inputs = keras.Input((5, 1))
    # The function writes the marker whenever it runs; the path is a constant of its saved bytecode.
    writes_marker = eval(f"lambda t: (open({str(marker)!r}, 'w').close(), t)[1]")  # noqa: S307
    x = keras.layers.Lambda(writes_marker)(inputs)
    x = keras.layers.LSTM(2)(x)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
    model.save(tmp_path / "evil.keras")
    content = (tmp_path / "evil.keras").read_bytes()
    marker.unlink(missing_ok=True)  # building the model ran the function once, here in the test

    before = snapshot(model_dir)
    for declared in ({}, {"architecture": "lstm"}):
        error = assert_error(upload(api, "evil", content, **declared), 422, "unsafe_model", "file")
        assert "Lambda" in error["message"] or "code" in error["message"]
    assert not marker.exists()
    assert snapshot(model_dir) == before
    assert_error(api.get("/models/evil"), 404, "model_not_found")
    # The file really is armed: loading it unsafely does run the function.
    keras.models.load_model(tmp_path / "evil.keras", safe_mode=False)
    assert marker.exists()
