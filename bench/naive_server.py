"""The naive baseline: the same ``.keras`` file, ``keras.models.load_model`` and ``model.predict`` per request.

What someone would write first: a FastAPI route that pads the request like lstm-serve does (pre-pad with
zeros to ``max_len``) and calls ``model.predict(x, verbose=0)``. Same body and response shape as
``POST /models/{name}/predict`` of lstm-serve.

Run: ``BENCH_MODEL_PATH=/path/model.keras python -m uvicorn bench.naive_server:app --port 8001``.
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import keras
import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel

MODEL_PATH_ENV = "BENCH_MODEL_PATH"


class PredictBody(BaseModel):
    sequences: list[list[float]]
    version: int | None = None
    truncate: str | None = None


def _version_of(path: Path) -> int:
    """lstm-serve keeps ``MODEL_DIR/<name>/<version>/model.keras``: report that version, else 1."""
    return int(path.parent.name) if path.parent.name.isdigit() else 1


def create_app(model_path: str | Path | None = None) -> FastAPI:
    """An app serving one model file (default: the path in ``BENCH_MODEL_PATH``, read at start-up)."""
    state: dict = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        path = Path(model_path or os.environ[MODEL_PATH_ENV])
        model = keras.models.load_model(path)
        state["model"] = model
        state["version"] = _version_of(path)
        state["max_len"] = int(model.input_shape[1])
        state["tokens"] = len(model.input_shape) == 2
        yield
        state.clear()

    app = FastAPI(title="naive keras baseline", lifespan=lifespan)

    @app.get("/health/ready")
    def ready() -> dict:
        return {"status": "ready"}

    @app.post("/models/{name}/predict")
    def predict(name: str, body: PredictBody) -> dict:
        model, max_len = state["model"], state["max_len"]
        dtype = "int32" if state["tokens"] else "float32"
        x = keras.utils.pad_sequences(body.sequences, maxlen=max_len, dtype=dtype, padding="pre", value=0)
        if not state["tokens"]:
            x = x[:, :, None]
        probabilities = np.asarray(model.predict(x, verbose=0)).reshape(len(body.sequences), -1)[:, -1]
        return {
            "model": name,
            "version": state["version"],
            "predictions": [{"probability": float(p), "label": int(p >= 0.5)} for p in probabilities],
        }

    return app


app = create_app()
