"""More than one output and more than one feature per step: multiclass and regression heads, n_features, and
masked padding, through every route, each against Keras (1e-5).

One module-scoped app trains one tiny model per (architecture, task, input kind) that applies, through HTTP,
once; the tests then read them.
"""

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient

from models.architectures import ArchParams, build_sequence_model, build_stateful_model, get_architecture, param_count
from models.errors import InvalidInput
from models.serving.engines import KerasEngine, export_engine, random_inputs
from models.serving.servable import ARTIFACT, META, ModelMeta
from models.inputs import PAD_TOKEN, to_model_input, true_lengths
from models.training.fitting import LengthBatches, label_array
from service.app import create_app
from tests.conftest import make_settings, train
from tests.test_models import save, upload

TOLERANCE = 1e-5
REDIS_URL = "redis://127.0.0.1:6379/0"
TINY = {"units": 4, "dense_units": 4, "embedding_dim": 4, "vocab_size": 12}
RNG = np.random.default_rng(0)


def _float_data(n_features: int, n: int = 12) -> list[list[Any]]:
    """Ragged float sequences (2..6 steps): numbers for one feature, rows of ``n_features`` numbers otherwise."""
    sequences = []
    for i in range(n):
        steps = RNG.normal(size=(2 + i % 5, n_features)).round(3)
        sequences.append(steps[:, 0].tolist() if n_features == 1 else steps.tolist())
    return sequences


TOKENS = [[int(t) for t in RNG.integers(1, 12, size=2 + i % 5)] for i in range(12)]

#: name -> (architecture, params beyond TINY, answers field, answers); each trained once, 1 epoch.
MODELS: dict[str, tuple[str, dict[str, Any], str, list[Any]]] = {
    "mc-lstm": ("lstm", {"n_features": 3, "task": "multiclass", "n_classes": 3}, "labels", [i % 3 for i in range(12)]),
    "rg-td": ("td_dense_lstm", {"n_features": 2, "task": "regression", "n_outputs": 2}, "targets",
              [[i / 10, -i / 5] for i in range(12)]),
    "mc-stateful": ("stateful_lstm", {"n_features": 2, "task": "multiclass", "n_classes": 4}, "labels",
                    [i % 4 for i in range(12)]),
    "rg-stateful": ("stateful_lstm", {"task": "regression"}, "targets", [i / 10 for i in range(12)]),
    "rg-emb": ("embedding_lstm", {"task": "regression"}, "targets", [i / 10 for i in range(12)]),
    "mc-bi": ("embedding_bilstm", {"task": "multiclass", "n_classes": 3}, "labels", [i % 3 for i in range(12)]),
    "masked": ("lstm", {"n_features": 2, "task": "multiclass", "n_classes": 3, "padding": "masked"}, "labels",
               [i % 3 for i in range(12)]),
    "masked-td": ("td_dense_lstm", {"task": "regression", "padding": "masked"}, "targets", [i / 10 for i in range(12)]),
    "masked-emb": ("embedding_lstm", {"task": "multiclass", "n_classes": 3, "padding": "masked"}, "labels",
                   [i % 3 for i in range(12)]),
    "masked-bi": ("embedding_bilstm", {"task": "regression", "padding": "masked"}, "targets", [i / 10 for i in range(12)]),
}
SESSION_MODELS = [name for name, (arch, *_) in MODELS.items() if get_architecture(arch).supports_sessions]


def _sequences(name: str) -> list[list[Any]]:
    arch, params, _, _ = MODELS[name]
    if get_architecture(arch).input_kind == "tokens":
        return TOKENS
    return _float_data(params.get("n_features", 1))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("heads") / "models"


@pytest.fixture(scope="module")
def served(model_dir: Path) -> Iterator[TestClient]:
    """An app that trained every model of ``MODELS`` through ``POST /models/{name}/train``."""
    with TestClient(create_app(make_settings(model_dir))) as client:
        for name, (arch, params, field, answers) in MODELS.items():
            data = {"sequences": _sequences(name), field: answers}
            train(client, name, architecture=arch, data=data, epochs=1, batch_size=4, params={**TINY, **params})
        yield client


def _meta(model_dir: Path, name: str) -> ModelMeta:
    return ModelMeta.read(model_dir / name / "1" / META)


def _keras_sequence_model(model_dir: Path, name: str) -> keras.Model:
    """The stored artifact's weights in the whole-sequence Keras model (the stateful artifact's stateless twin)."""
    meta = _meta(model_dir, name)
    model = build_sequence_model(get_architecture(meta.architecture), meta.arch_params())
    model.set_weights(keras.models.load_model(model_dir / name / "1" / ARTIFACT, compile=False).get_weights())
    return model


def _keras_outputs(model_dir: Path, name: str, sequences: list[list[Any]]) -> np.ndarray:
    """Keras' answer for each sequence: pre-padded with zeros to max_len, or (masked) over its own steps only."""
    meta = _meta(model_dir, name)
    params = meta.arch_params()
    model = _keras_sequence_model(model_dir, name)
    rows = []
    for seq in sequences:
        x = np.asarray(seq, np.float32)
        if meta.input_kind == "float":
            x = x.reshape(len(seq), params.n_features)
        if params.padding == "pre":
            x = np.concatenate([np.zeros((params.max_len - len(seq), *x.shape[1:]), x.dtype), x])
        rows.append(np.asarray(model(x[None], training=False))[0])
    return np.stack(rows)


def _outputs(body: dict[str, Any], task: str) -> np.ndarray:
    """The predictions of a response as an ``(n, width)`` array, checking each is in the task's form."""
    rows = []
    for p in body["predictions"]:
        if task == "multiclass":
            assert set(p) == {"probabilities", "label"}
            assert p["label"] == int(np.argmax(p["probabilities"]))
            assert abs(sum(p["probabilities"]) - 1) < 1e-5
            rows.append(p["probabilities"])
        elif task == "regression":
            assert set(p) == {"values"}
            rows.append(p["values"])
        else:
            assert set(p) == {"probability", "label"}
            rows.append([p["probability"]])
    return np.array(rows)


@pytest.mark.parametrize("name", list(MODELS))
def test_predict_equals_keras(served: TestClient, model_dir: Path, name: str) -> None:
    meta = _meta(model_dir, name)
    sequences = _sequences(name)[:5]
    response = served.post(f"/models/{name}/predict", json={"sequences": sequences})
    assert response.status_code == 200, response.text
    got = _outputs(response.json(), meta.task)
    assert got.shape == (5, meta.arch_params().output_width)
    np.testing.assert_allclose(got, _keras_outputs(model_dir, name, sequences), atol=TOLERANCE)


@pytest.mark.parametrize("name", list(MODELS))
def test_model_description_says_task_and_width(served: TestClient, name: str) -> None:
    arch, params, _, _ = MODELS[name]
    body = served.get(f"/models/{name}").json()
    assert body["architecture"] == arch
    assert body["task"] == params["task"]
    assert body.get("n_features", 1) == params.get("n_features", 1)
    assert body.get("n_classes") == params.get("n_classes")
    assert body.get("n_outputs") == (params.get("n_outputs", 1) if params["task"] == "regression" else None)
    assert body.get("padding", "pre") == params.get("padding", "pre")
    # Only what differs from the question's models is said: a binary one-feature model's description is unchanged.
    assert ("n_features" in body) == ("n_features" in params) and ("padding" in body) == ("padding" in params)
    assert ("n_classes" in body) == (params["task"] == "multiclass")


def _keras_stateful_outputs(model_dir: Path, name: str, values: list[Any]) -> np.ndarray:
    """The seed's stateful (1, 1, n_features) Keras model on the trained weights, fed one step per call."""
    meta = _meta(model_dir, name)
    params = meta.arch_params()
    model = build_stateful_model(get_architecture(meta.architecture), params)
    model.set_weights(keras.models.load_model(model_dir / name / "1" / ARTIFACT, compile=False).get_weights())
    shape = (1, 1) if meta.input_kind == "tokens" else (1, 1, params.n_features)
    dtype = np.int32 if meta.input_kind == "tokens" else np.float32
    return np.stack([np.asarray(model(np.asarray(v, dtype).reshape(shape), training=False))[0] for v in values])


def _step_outputs(body: dict[str, Any], task: str) -> np.ndarray:
    if task == "binary":
        return np.array(body["probabilities"])[:, None]
    assert body["prediction"] == body["predictions"][-1]
    return _outputs(body, task)


@pytest.mark.parametrize("name", SESSION_MODELS)
def test_session_steps_equal_keras_stateful(served: TestClient, model_dir: Path, name: str) -> None:
    meta = _meta(model_dir, name)
    values = _sequences(name)[4]  # 6 steps
    session_id = served.post(f"/models/{name}/sessions").json()["session_id"]
    first = served.post(f"/sessions/{session_id}/step", json={"values": values[:2], "seq": 0}).json()
    rest = served.post(f"/sessions/{session_id}/step", json={"values": values[2:], "seq": 2}).json()
    again = served.post(f"/sessions/{session_id}/step", json={"values": values[2:], "seq": 2}).json()
    assert rest.get("steps_seen") == len(values), rest
    assert again == rest  # a retried step is answered again, not applied twice
    assert rest["steps_seen"] == len(values)
    got = np.concatenate([_step_outputs(first, meta.task), _step_outputs(rest, meta.task)])
    np.testing.assert_allclose(got, _keras_stateful_outputs(model_dir, name, values), atol=TOLERANCE)


@pytest.mark.parametrize("name", ["mc-lstm", "rg-td"])
def test_redis_sessions_keep_rows_of_outputs(served: TestClient, model_dir: Path, name: str) -> None:
    """The Redis store keeps the last step's outputs of any width, so a retried step is answered alike."""
    prefix = f"lstm-serve-test-heads-{uuid.uuid4().hex}:"
    settings = make_settings(model_dir, session_store=REDIS_URL, session_key_prefix=prefix, session_store_timeout_s=5.0)
    try:
        with TestClient(create_app(settings)) as client:
            values = _sequences(name)[4]
            session_id = client.post(f"/models/{name}/sessions").json()["session_id"]
            first = client.post(f"/sessions/{session_id}/step", json={"values": values[:3], "seq": 0}).json()
            again = client.post(f"/sessions/{session_id}/step", json={"values": values[:3], "seq": 0}).json()
            rest = client.post(f"/sessions/{session_id}/step", json={"values": values[3:], "seq": 3}).json()
        assert again == first and rest["steps_seen"] == len(values)
        task = _meta(model_dir, name).task
        got = np.concatenate([_step_outputs(first, task), _step_outputs(rest, task)])
        np.testing.assert_allclose(got, _keras_stateful_outputs(model_dir, name, values), atol=TOLERANCE)
    finally:
        store = redis.Redis.from_url(REDIS_URL)
        keys = list(store.scan_iter(f"{prefix}*"))
        if keys:
            store.delete(*keys)


@pytest.mark.parametrize("name", ["masked", "masked-td", "masked-emb"])
def test_masked_short_sequence_predict_equals_session_stepping(served: TestClient, model_dir: Path, name: str) -> None:
    meta = _meta(model_dir, name)
    short = _sequences(name)[:3]  # 2, 3 and 4 steps of a max_len-6 model: padding would change them
    predicted = _outputs(served.post(f"/models/{name}/predict", json={"sequences": short}).json(), meta.task)
    for row, seq in zip(predicted, short, strict=True):
        session_id = served.post(f"/models/{name}/sessions").json()["session_id"]
        stepped = _step_outputs(served.post(f"/sessions/{session_id}/step", json={"values": seq}).json(), meta.task)
        np.testing.assert_allclose(row, stepped[-1], atol=TOLERANCE)


def test_unmasked_short_sequence_reads_the_padding(served: TestClient, model_dir: Path) -> None:
    """The contrast that makes the masked test mean something: a pre-padded model's answer moves with padding."""
    short = _sequences("mc-lstm")[0]
    predicted = served.post("/models/mc-lstm/predict", json={"sequences": [short]}).json()["predictions"][0]
    session_id = served.post("/models/mc-lstm/sessions").json()["session_id"]
    stepped = served.post(f"/sessions/{session_id}/step", json={"values": short}).json()["prediction"]
    assert np.max(np.abs(np.subtract(predicted["probabilities"], stepped["probabilities"]))) > TOLERANCE


def test_tf_serving_rows_have_the_output_width(served: TestClient, model_dir: Path) -> None:
    sequences = _sequences("mc-lstm")[:3]
    expected = _keras_outputs(model_dir, "mc-lstm", sequences)
    rows = served.post("/v1/models/mc-lstm:predict", json={"instances": sequences}).json()["predictions"]
    np.testing.assert_allclose(np.array(rows), expected, atol=TOLERANCE)
    columnar = served.post("/v1/models/mc-lstm:predict", json={"inputs": sequences}).json()["outputs"]
    np.testing.assert_allclose(np.array(columnar), expected, atol=TOLERANCE)
    signature = served.get("/v1/models/mc-lstm/metadata").json()["metadata"]["signature_def"]["signature_def"]
    dims = signature["serving_default"]
    assert [d["size"] for d in dims["inputs"]["sequence"]["tensor_shape"]["dim"]] == ["-1", "6", "3"]
    assert [d["size"] for d in dims["outputs"]["probability"]["tensor_shape"]["dim"]] == ["-1", "3"]
    bad = served.post("/v1/models/mc-lstm:predict", json={"instances": [[[0.1, 0.2], [0.3, 0.4, 0.5]]]})
    assert bad.status_code == 400 and "instances[0][0]" in bad.json()["error"]


def test_kserve_v2_output_is_batch_by_width(served: TestClient, model_dir: Path) -> None:
    sequences = [seq[:2] for seq in _sequences("rg-td")[:3]]  # equal lengths: one [3, 2, 2] tensor
    expected = _keras_outputs(model_dir, "rg-td", sequences)
    tensor = {"name": "sequence", "datatype": "FP32", "shape": [3, 2, 2], "data": np.ravel(sequences).tolist()}
    body = served.post("/v2/models/rg-td/infer", json={"inputs": [tensor]}).json()
    output = body["outputs"][0]
    assert output["shape"] == [3, 2]
    np.testing.assert_allclose(np.reshape(output["data"], (3, 2)), expected, atol=TOLERANCE)
    metadata = served.get("/v2/models/rg-td").json()
    assert metadata["inputs"][0]["shape"] == [-1, 6, 2] and metadata["outputs"][0]["shape"] == [-1, 2]
    wrong = {**tensor, "shape": [3, 4], "data": np.ravel(sequences).tolist()}
    assert served.post("/v2/models/rg-td/infer", json={"inputs": [wrong]}).status_code == 400


def test_triton_sequence_steps_rows_of_features(served: TestClient, model_dir: Path) -> None:
    values = _sequences("mc-stateful")[4]  # 6 steps of 2 features
    expected = _keras_stateful_outputs(model_dir, "mc-stateful", values)
    got = []
    for start, stop, flags in ((0, 2, {"sequence_start": True}), (2, 6, {"sequence_end": True})):
        chunk = values[start:stop]
        tensor = {"name": "sequence", "datatype": "FP32", "shape": [1, len(chunk), 2], "data": np.ravel(chunk).tolist()}
        response = served.post("/v2/models/mc-stateful/infer", json={"inputs": [tensor], "parameters": {"sequence_id": 5, **flags}})
        assert response.status_code == 200, response.text
        output = response.json()["outputs"][0]
        assert output["shape"] == [len(chunk), 4]
        got.append(np.reshape(output["data"], output["shape"]))
    np.testing.assert_allclose(np.concatenate(got), expected, atol=TOLERANCE)


@pytest.mark.parametrize(
    ("architecture", "params"),
    [
        ("lstm", {"n_features": 3, "task": "multiclass", "n_classes": 4}),
        ("td_dense_lstm", {"n_features": 2, "task": "regression", "n_outputs": 3}),
        ("embedding_bilstm", {"task": "multiclass", "n_classes": 3}),
        ("lstm", {"n_features": 2, "task": "regression", "n_outputs": 2, "padding": "masked"}),
        ("embedding_bilstm", {"task": "multiclass", "n_classes": 3, "padding": "masked"}),
    ],
)
def test_both_engines_equal_keras_for_every_width(tmp_path: Path, architecture: str, params: dict[str, Any]) -> None:
    arch = get_architecture(architecture)
    shape = ArchParams(max_len=6, **{**TINY, **params})
    model = build_sequence_model(arch, shape)
    _randomize(model, seed=4)
    x = random_inputs(model, 5, shape.vocab_size, seed=2)[0]
    assert param_count(arch, shape) == model.count_params()  # what MAX_MODEL_PARAMS is checked against
    onnx = export_engine(model, tmp_path / "predict.onnx", shape.vocab_size)
    assert onnx.backend == "onnxruntime"  # exported and verified, not fallen back
    for engine in (onnx, KerasEngine(model)):
        got = engine.run(x)[0]
        assert got.shape == (5, shape.output_width)
        np.testing.assert_allclose(got, np.asarray(model(x, training=False)), atol=TOLERANCE)


# --- validation -------------------------------------------------------------------------------------


def _error(response: Any, status: int, field: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["details"]["field"] == field, error
    return error


def test_wrong_width_names_sequence_step_and_width(served: TestClient) -> None:
    body = {"sequences": [[[0.1, 0.2, 0.3]], [[0.1, 0.2, 0.3], [0.4, 0.5]]]}
    error = _error(served.post("/models/mc-lstm/predict", json=body), 422, "sequences[1][1]")
    assert error["details"]["expected"] == "a list of 3 numbers"
    error = _error(served.post("/models/mc-lstm/predict", json={"sequences": [[0.1, 0.2]]}), 422, "sequences[0][0]")
    assert "n_features=3" in error["message"]
    session_id = served.post("/models/mc-lstm/sessions").json()["session_id"]
    _error(served.post(f"/sessions/{session_id}/step", json={"values": [[0.1, 0.2]]}), 422, "values[0]")
    assert served.get(f"/sessions/{session_id}").json()["steps_seen"] == 0
    # A one-feature model keeps today's form: a step is a number.
    _error(served.post("/models/rg-stateful/predict", json={"sequences": [[[0.1]]]}), 422, "sequences[0][0]")


@pytest.mark.parametrize(
    ("params", "data", "field"),
    [
        ({"task": "multiclass", "n_classes": 3}, {"labels": [0, 3]}, "data.labels[1]"),
        ({}, {"labels": [0, 2]}, "data.labels[1]"),
        ({"task": "regression", "n_outputs": 2}, {"targets": [[0.1, 0.2], [0.3]]}, "data.targets[1]"),
        ({"task": "regression"}, {"labels": [0, 1]}, "data.targets"),
        ({"n_features": 2}, {"labels": [0, 1]}, "data.sequences[0][0]"),
    ],
)
def test_training_data_that_does_not_fit_the_task(served: TestClient, params: dict[str, Any], data: dict[str, Any],
                                                  field: str) -> None:
    body = {"data": {"sequences": [[0.1], [0.2]], **data}, "params": {**TINY, **params}, "epochs": 1}
    _error(served.post("/models/bad/train", json=body), 422, field)


@pytest.mark.parametrize(
    ("architecture", "params", "field"),
    [
        ("embedding_lstm", {"n_features": 2}, "params.n_features"),
        ("stateful_lstm", {"padding": "masked"}, "params.padding"),
    ],
)
def test_params_an_architecture_cannot_build(served: TestClient, architecture: str, params: dict[str, Any],
                                             field: str) -> None:
    body = {"architecture": architecture, "data": {"sequences": [[1], [2]], "labels": [0, 1]}, "params": params}
    _error(served.post("/models/bad/train", json=body), 422, field)


def test_non_finite_regression_targets_are_refused(served: TestClient) -> None:
    # JSON has no NaN; a number beyond float32 is the non-finite target a client can send.
    body = {"data": {"sequences": [[0.1], [0.2]], "targets": [0.1, 1e39]}, "params": {**TINY, "task": "regression"}}
    _error(served.post("/models/bad/train", json=body), 422, "data.targets[1]")
    # Generated datasets reach the same check without JSON in between.
    with pytest.raises(InvalidInput) as caught:
        label_array([[0.1, 0.2], [0.3, float("nan")]], ArchParams(max_len=3, task="regression", n_outputs=2), "dataset.targets")
    assert caught.value.details["field"] == "dataset.targets[1][1]"


def test_feature_rows_pad_truncate_and_name_the_step_as_sent() -> None:
    rows = [[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], [[7.0, 8.0]]]
    batch = to_model_input(rows, input_kind="float", max_len=2, vocab_size=0, truncate="pre", n_features=2)
    np.testing.assert_array_equal(batch, [[[3, 4], [5, 6]], [[0, 0], [7, 8]]])
    masked = to_model_input(rows[1:], input_kind="float", max_len=3, vocab_size=0, n_features=2, pad_value=np.nan)
    assert true_lengths(masked).tolist() == [1]
    with pytest.raises(InvalidInput) as caught:  # step 2 as sent, the first after cutting step 0
        to_model_input([[[1.0, 2.0], [3.0, 4.0], [5.0]]], input_kind="float", max_len=2, vocab_size=0, truncate="pre", n_features=2)
    assert caught.value.details["field"] == "sequences[0][2]"


def test_masked_token_ids_are_padded_apart_from_every_id_and_still_checked() -> None:
    batch = to_model_input([[3, 1, 4], [5]], input_kind="tokens", max_len=4, vocab_size=6, pad_value=np.nan)
    np.testing.assert_array_equal(batch, [[PAD_TOKEN, 3, 1, 4], [PAD_TOKEN, PAD_TOKEN, PAD_TOKEN, 5]])
    assert batch.dtype == np.int32 and true_lengths(batch).tolist() == [3, 1]
    assert true_lengths(to_model_input([[1, 2]], input_kind="tokens", max_len=2, vocab_size=6, pad_value=np.nan)).tolist() == [2]
    # The sent ids are checked as for any token model, located as sent; the padding is not an id to check.
    for bad, message in ((6, "out of range"), (-1, "out of range"), (2.5, "whole numbers"), (float("nan"), "whole numbers")):
        with pytest.raises(InvalidInput, match=message) as caught:
            to_model_input([[1], [2, bad]], input_kind="tokens", max_len=4, vocab_size=6, pad_value=np.nan)
        assert caught.value.details["field"] == "sequences[1][1]"


def test_length_batches_hold_one_length_each_cut_to_it() -> None:
    x = to_model_input([[1.0], [1.0, 2.0], [3.0], [4.0, 5.0], [6.0]], input_kind="float", max_len=3, vocab_size=0,
                       pad_value=np.nan)
    batches = LengthBatches(x, np.arange(5), batch_size=2, seed=0)
    seen = sorted(int(i) for k in range(len(batches)) for i in batches[k][1])
    assert seen == [0, 1, 2, 3, 4]
    for k in range(len(batches)):
        xs, ys = batches[k]
        assert not np.isnan(xs).any() and xs.shape[1] in (1, 2)
        np.testing.assert_array_equal(xs[:, -1, 0], x[ys, -1, 0])


# --- uploads ----------------------------------------------------------------------------------------


def _randomize(model: keras.Model, seed: int) -> None:
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.5, w.shape).astype(np.float32) for w in model.get_weights()])


def _keras_built(kind: str) -> tuple[keras.Model, dict[str, Any]]:
    """A model a user might build with Keras for each head and input kind, and what the service should detect."""
    if kind == "multiclass-features":
        inputs = keras.Input((5, 3))
        x = keras.layers.LSTM(4)(inputs)
        return keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(x)), {"task": "multiclass", "n_classes": 4, "n_features": 3}
    if kind == "regression-td":
        inputs = keras.Input((5, 2))
        x = keras.layers.TimeDistributed(keras.layers.Dense(3))(inputs)
        x = keras.layers.LSTM(4)(x)
        return keras.Model(inputs, keras.layers.Dense(2)(x)), {"task": "regression", "n_outputs": 2, "n_features": 2}
    if kind == "stateful-multiclass":
        inputs = keras.Input(batch_shape=(1, 1, 2))
        x = keras.layers.LSTM(4, stateful=True)(inputs)
        return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x)), {"task": "multiclass", "n_classes": 3, "n_features": 2}
    inputs = keras.Input((5,), dtype="int32")
    x = keras.layers.Embedding(12, 4)(inputs)
    x = keras.layers.Bidirectional(keras.layers.LSTM(4))(x)
    return keras.Model(inputs, keras.layers.Dense(1)(x)), {"task": "regression", "n_outputs": 1}


@pytest.mark.parametrize("kind", ["multiclass-features", "regression-td", "stateful-multiclass", "tokens-regression"])
def test_upload_detects_task_and_width(served: TestClient, tmp_path: Path, kind: str) -> None:
    model, expected = _keras_built(kind)
    _randomize(model, seed=3)
    form = {"max_len": 5} if kind == "stateful-multiclass" else {}
    name = f"up-{kind}"
    response = upload(served, name, save(model, tmp_path), **form)
    assert response.status_code == 201, response.text
    body = served.get(f"/models/{name}").json()
    for key, value in expected.items():
        assert body[key] == value, body
    if kind == "tokens-regression":
        x = RNG.integers(0, 12, size=(3, 5)).astype(np.int32)
    else:
        x = RNG.normal(size=(3, 5, expected["n_features"])).astype(np.float32)
    got = _outputs(served.post(f"/models/{name}/predict", json={"sequences": x.tolist()}).json(), expected["task"])
    if kind == "stateful-multiclass":
        want = []
        for seq in x:
            model.layers[1].reset_state()
            for step in seq:
                last = np.asarray(model(step.reshape(1, 1, -1), training=False))[0]
            want.append(last)
        expected_outputs = np.stack(want)
    else:
        expected_outputs = np.asarray(model(x, training=False))
    np.testing.assert_allclose(got, expected_outputs, atol=TOLERANCE)


def test_upload_with_a_head_that_fits_no_task_is_refused(served: TestClient, tmp_path: Path) -> None:
    inputs = keras.Input((5, 2))
    x = keras.layers.LSTM(3)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="softmax")(x))  # softmax over one class
    response = upload(served, "softmax-one", save(model, tmp_path))
    error = _error(response, 422, "file")
    assert error["code"] == "invalid_model_file" and error["details"]["option"] == "activation"


def test_page_says_each_models_task(served: TestClient) -> None:
    page = served.get("/").text
    assert "multiclass (3 classes), 3 features" in page  # mc-lstm
    assert "regression (2 values), 2 features" in page  # rg-td
