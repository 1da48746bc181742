"""Closed-loop load of KServe V2 inference over gRPC and over HTTP, for ``bench/run.py`` (wrk speaks no gRPC).

Both transports are driven by the same asyncio client code in this process, sending what
``tritonclient`` sends by default: the 50-step sequence as a binary FP32 tensor (gRPC ``raw_input_contents``;
HTTP the binary tensor data extension) and asking for the output as binary. The client is Python, so its own
cost caps req/s well below wrk's; compare the transports by the server's CPU per request, which does not
depend on the client.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import grpc
import numpy as np
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc


@dataclass
class LoadResult:
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


async def _drive(call: Callable[[], Awaitable[None]], concurrency: int, duration: float) -> LoadResult:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + duration

    async def worker() -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                await call()
            except Exception:  # noqa: BLE001 - counted, the load goes on
                errors += 1
                continue
            latencies.append((time.perf_counter() - started) * 1000.0)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return LoadResult(len(latencies), errors, time.perf_counter() - t0, latencies)


def grpc_request(model: str, sequence: list[float]) -> pb.ModelInferRequest:
    """The request ``tritonclient.grpc`` sends for one sequence: FP32 ``[1, steps, 1]`` in raw_input_contents."""
    values = np.asarray(sequence, "<f4").reshape(1, -1, 1)
    tensor = pb.ModelInferRequest.InferInputTensor(name="sequence", datatype="FP32", shape=list(values.shape))
    return pb.ModelInferRequest(model_name=model, inputs=[tensor], raw_input_contents=[values.tobytes()])


def http_request(sequence: list[float]) -> tuple[bytes, dict[str, str]]:
    """The body ``tritonclient.http`` sends for one sequence: JSON part, then the FP32 bytes; output as binary."""
    values = np.asarray(sequence, "<f4").reshape(1, -1, 1)
    header = json.dumps({
        "inputs": [{"name": "sequence", "shape": list(values.shape), "datatype": "FP32",
                    "parameters": {"binary_data_size": values.nbytes}}],
        "parameters": {"binary_data_output": True},
    }).encode()
    return header + values.tobytes(), {"Inference-Header-Content-Length": str(len(header))}


def probability_of_grpc(response: pb.ModelInferResponse) -> float:
    return float(np.frombuffer(response.raw_output_contents[0], "<f4")[0])


async def grpc_load(address: str, model: str, sequence: list[float], concurrency: int, duration: float) -> tuple[LoadResult, float]:
    """Load over one gRPC channel (HTTP/2 multiplexes the concurrent calls); also the probability answered."""
    request = grpc_request(model, sequence)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        probability = probability_of_grpc(await stub.ModelInfer(request))

        async def call() -> None:
            await stub.ModelInfer(request)

        return await _drive(call, concurrency, duration), probability


async def http_load(url: str, model: str, sequence: list[float], concurrency: int, duration: float) -> tuple[LoadResult, float]:
    """Load over ``concurrency`` keep-alive HTTP/1.1 connections; also the probability answered.

    aiohttp, not httpx: httpx writes the headers and the body separately without TCP_NODELAY, and Nagle's
    algorithm then holds every body for the server's delayed ACK (measured: 40 ms per request)."""
    body, headers = http_request(sequence)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(url, connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as client:
        path = f"/v2/models/{model}/infer"
        async with client.post(path, data=body, headers=headers) as first:
            first.raise_for_status()
            length = int(first.headers["inference-header-content-length"])
            probability = float(np.frombuffer((await first.read())[length : length + 4], "<f4")[0])

        async def call() -> None:
            async with client.post(path, data=body, headers=headers) as response:
                response.raise_for_status()
                await response.read()

        return await _drive(call, concurrency, duration), probability


def run(kind: str, target: str, model: str, sequence: list[float], concurrency: int, duration: float) -> tuple[LoadResult, float]:
    """``kind`` is ``grpc`` (target ``host:port``) or ``http`` (target a base URL)."""
    load = grpc_load if kind == "grpc" else http_load
    return asyncio.run(load(target, model, sequence, concurrency, duration))
