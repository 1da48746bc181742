"""The model signature both compatibility protocols describe, and the JSON number rule their codecs share.

Every lstm-serve model has one input and one output, named alike in TF Serving and KServe V2: ``sequence``
(floats ``[-1, max_len, 1]`` or token ids ``[-1, max_len]``) and ``probability`` (``[-1, 1]``).
"""

import json
import math
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import Path

from models.errors import InvalidInput
from models.serving.predictor import Predictor
from service.metrics import Metrics
from service.schemas import FLOAT32_MAX

INPUT_NAME = "sequence"
OUTPUT_NAME = "probability"

Version = Annotated[int, Path(ge=1, description="Model version", examples=[1])]


def input_shape(input_kind: str, max_len: int) -> list[int]:
    """The model input's shape with a variable batch: ``[-1, max_len, 1]`` floats, ``[-1, max_len]`` token ids."""
    return [-1, max_len, 1] if input_kind == "float" else [-1, max_len]


def describe(value: Any) -> str:
    """A short JSON-ish rendering of what the client sent, for error messages."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value).replace("nan", "NaN").replace("inf", "Infinity")
    if isinstance(value, list) and len(value) > 4:
        return f"a list of {len(value)} items"
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:60] + "…"


def json_number(value: Any, field: str) -> float | int:
    """``value`` if it is a JSON number a float32 model input can hold (finite, within float32), else ``InvalidInput``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput(f"{field}: expected a number, got {describe(value)}.", field=field, expected="a number", got=value)
    # Compare before any float conversion: a 400-digit integer would overflow it.
    if not (isinstance(value, int) or math.isfinite(value)) or not -FLOAT32_MAX <= value <= FLOAT32_MAX:
        raise InvalidInput(
            f"{field}: expected a finite number within float32, got {describe(value)}.",
            field=field,
            expected="a finite number within float32",
            got=value,
        )
    return value


async def predict_sequences(
    predictor: Predictor,
    metrics: Metrics,
    name: str,
    sequences: Sequence[Sequence[float]],
    version: int | None,
) -> tuple[int, list[float]]:
    """The same path as ``/models/{name}/predict``: the version that answered and one probability per sequence."""
    servable, probabilities = await predictor.predict(name, sequences, version, None)
    metrics.predicted.labels(name).inc(len(probabilities))
    return servable.meta.version, [float(p) for p in probabilities]
