"""The model signature both compatibility protocols describe. (Their codecs check numbers with the domain's
one rule, ``models.inputs.check_number``, as the native routes' schema does.)

Every lstm-serve model has one input and one output, named alike in TF Serving and KServe V2: ``sequence``
(floats ``[-1, max_len, 1]`` or token ids ``[-1, max_len]``) and ``probability`` (``[-1, 1]``).
"""

from collections.abc import Sequence
from typing import Annotated

from fastapi import Path

from models.serving.predictor import Predictor
from service.metrics import Metrics

INPUT_NAME = "sequence"
OUTPUT_NAME = "probability"

Version = Annotated[int, Path(ge=1, description="Model version", examples=[1])]


def input_shape(input_kind: str, max_len: int) -> list[int]:
    """The model input's shape with a variable batch: ``[-1, max_len, 1]`` floats, ``[-1, max_len]`` token ids."""
    return [-1, max_len, 1] if input_kind == "float" else [-1, max_len]


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
