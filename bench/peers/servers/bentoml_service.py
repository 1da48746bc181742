"""BentoML 1.4 serving the benchmark model with onnxruntime and BentoML's adaptive batching.

``POST /predict`` with ``{"sequences": [[...50 floats...]]}`` (lstm-serve's body), answer ``[p]``. One worker
process under BentoML's supervisor, access log off, everything else at BentoML's defaults (metrics on,
batching window chosen by BentoML's adaptive dispatcher up to its default max_latency_ms).

Run: ``BENCH_ONNX_PATH=.../predict.onnx python -m bentoml serve bench.peers.servers.bentoml_service:BenchService
--host 127.0.0.1 --port 8006`` from the repository root.
"""

import bentoml
import numpy as np

from bench.peers.servers.onnx_model import OnnxModel


@bentoml.service(workers=1, logging={"access": {"enabled": False}})
class BenchService:
    def __init__(self) -> None:
        self.model = OnnxModel()

    @bentoml.api(batchable=True, max_batch_size=32)
    def predict(self, sequences: np.ndarray) -> np.ndarray:
        """Probabilities of a batch of sequences; BentoML merges concurrent requests along axis 0."""
        return self.model.probabilities(sequences)
