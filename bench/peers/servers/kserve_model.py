"""KServe's Python ModelServer serving the benchmark model with onnxruntime, V1 protocol.

V1 (``POST /v1/models/bench:predict`` with ``{"instances": [[...50 floats...]]}``, answer
``{"predictions": [p]}``) because its body is a list of sequences, like lstm-serve's ``{"sequences": [...]}``;
V2 wraps the same numbers in a tensor object (name, shape, datatype, flat data). KServe's ModelServer has
no batcher of its own (batching is the KServe agent's job, a separate container); gRPC is off (not
measured), one uvicorn worker, per-request latency and access logs off.

Run: ``BENCH_ONNX_PATH=.../predict.onnx python -m bench.peers.servers.kserve_model --http_port 8005
--enable_grpc false --enable_latency_logging false`` (KServe reads its flags from the command line).
"""

import logging

import kserve
import numpy as np

from bench.peers.servers.onnx_model import OnnxModel

MODEL_NAME = "bench"


class BenchModel(kserve.Model):
    """The KServe model: ``load`` opens the ONNX file, ``predict`` answers a V1 body."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.model: OnnxModel | None = None

    def load(self) -> bool:
        self.model = OnnxModel()
        self.ready = True
        return self.ready

    def predict(self, payload: dict, headers: dict[str, str] | None = None) -> dict:
        probabilities = self.model.probabilities(np.asarray(payload["instances"], dtype=np.float32))
        return {"predictions": probabilities.tolist()}


def main() -> None:
    model = BenchModel(MODEL_NAME)
    model.load()
    server = kserve.ModelServer()  # configures KServe's logging, the access log at INFO among it
    # No handler on uvicorn.access is what uvicorn's own ``access_log=False`` does: the protocol then skips
    # the access-log call for every request.
    logging.getLogger("uvicorn.access").handlers = []
    server.start([model])


if __name__ == "__main__":
    main()
