"""The HTTP ceiling: FastAPI + pydantic parsing of the predict body, no model, a constant answer.

Same route, body and response shape as lstm-serve's ``POST /models/{name}/predict``; whatever lstm-serve
spends beyond this is model work and its own middleware.

Run: ``python -m uvicorn bench.null_server:app --port 8002``.
"""

from fastapi import FastAPI
from pydantic import BaseModel


class PredictBody(BaseModel):
    sequences: list[list[float]]
    version: int | None = None
    truncate: str | None = None


app = FastAPI(title="null baseline")


@app.get("/health/ready")
async def ready() -> dict:
    return {"status": "ready"}


@app.post("/models/{name}/predict")
async def predict(name: str, body: PredictBody) -> dict:
    return {
        "model": name,
        "version": 1,
        "predictions": [{"probability": 0.5, "label": 1} for _ in body.sequences],
    }
