"""LitServe serving the benchmark model with onnxruntime and LitServe's batching.

``POST /predict`` with ``{"sequence": [...50 floats...]}`` (one item per request, LitServe's batching unit),
answer ``{"probability": p}``. One API server process and one inference worker, ``max_batch_size`` 32 and
a 1 ms ``batch_timeout``: with 0 LitServe's worker polls its queue without waiting (a busy loop burning a
core), and it holds each batch open for the whole timeout, so 1 ms is the smallest window that does not
spin. Access log off, log level warning.

Run: ``BENCH_ONNX_PATH=.../predict.onnx PORT=8007 python -m bench.peers.servers.litserve_api``.
"""

import os

import litserve as ls
import numpy as np

from bench.peers.servers.onnx_model import OnnxModel


class BenchAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.model = OnnxModel()

    def decode_request(self, request: dict) -> np.ndarray:
        return np.asarray(request["sequence"], dtype=np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        # LitAPI's default batch() stacks the decoded arrays; its default unbatch() splits the answer again.
        return self.model.probabilities(x)

    def encode_response(self, output: np.float32) -> dict[str, float]:
        return {"probability": float(output)}


def main() -> None:
    server = ls.LitServer(
        BenchAPI(max_batch_size=32, batch_timeout=0.001), accelerator="cpu", workers_per_device=1
    )
    server.run(
        host="127.0.0.1", port=int(os.environ["PORT"]), num_api_servers=1, log_level="warning",
        generate_client_file=False, access_log=False,
    )


if __name__ == "__main__":
    main()
