"""The benchmark model on ONNX Runtime, as every peer runs it: the same file, options and arithmetic."""

import os

import numpy as np
import onnxruntime as ort

#: Environment variable naming the ``predict.onnx`` file lstm-serve exported for the benchmark model.
ONNX_PATH_ENV = "BENCH_ONNX_PATH"


class OnnxModel:
    """``predict.onnx`` of an ``lstm`` version: float sequences of ``max_len`` steps in, probabilities out.

    One intra-op and one inter-op thread, as lstm-serve's engine (``models/serving/engines.py``) uses on
    these 2-core machines; more threads would only fight wrk and the HTTP loop for the same cores."""

    def __init__(self, path: str | None = None) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            path or os.environ[ONNX_PATH_ENV], options, providers=["CPUExecutionProvider"]
        )
        self._input = self._session.get_inputs()[0].name

    def probabilities(self, sequences: np.ndarray) -> np.ndarray:
        """(n, max_len) floats -> (n,) probabilities."""
        x = np.asarray(sequences, dtype=np.float32).reshape(len(sequences), -1, 1)
        return self._session.run(None, {self._input: x})[0].reshape(-1)
