"""The hand-written endpoint: FastAPI + pydantic + onnxruntime, no batching, lstm-serve's body and answer.

What a competent engineer writes in an afternoon: one route, the body parsed by a pydantic model, the
session run inline on the event loop (one sequence takes 20-30 us, less than a thread hand-off would cost).

Run: ``BENCH_ONNX_PATH=.../predict.onnx python -m uvicorn bench.peers.servers.fastapi_onnx:app --port 8004``.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from pydantic import BaseModel

from bench.peers.servers.onnx_model import OnnxModel


class PredictRequest(BaseModel):
    sequences: list[list[float]]


class Prediction(BaseModel):
    probability: float
    label: int


class PredictResponse(BaseModel):
    model: str
    version: int
    predictions: list[Prediction]


_state: dict[str, OnnxModel] = {}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    _state["model"] = OnnxModel()
    yield
    _state.clear()


app = FastAPI(title="hand-written FastAPI + onnxruntime", lifespan=lifespan, openapi_url=None)


@app.get("/health/ready")
async def ready() -> dict[str, str]:
    """Up once the model is loaded (the lifespan ran)."""
    return {"status": "ready"}


@app.post("/models/{name}/predict")
async def predict(name: str, body: PredictRequest) -> PredictResponse:
    """Probabilities of the given sequences (each exactly max_len steps; no padding)."""
    probabilities = _state["model"].probabilities(body.sequences)
    return PredictResponse(
        model=name,
        version=1,
        predictions=[Prediction(probability=float(p), label=int(p >= 0.5)) for p in probabilities],
    )
