"""The model signature both compatibility protocols describe. (Their codecs check numbers with the domain's
one rule, ``models.inputs.check_number``, as the native routes' schema does.)

Every lstm-serve model has one input and one output, named alike in TF Serving and KServe V2: ``sequence``
(floats ``[-1, max_len, n_features]`` or token ids ``[-1, max_len]``) and ``probability`` (``[-1, width]``:
1 for a binary model, ``n_classes`` class probabilities, or ``n_outputs`` regression values under the same
name, so a binary client sees what it always saw).
"""

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import Path

from models.serving.predictor import Predictor
from models.serving.servable import ModelMeta
from service.metrics import Metrics

INPUT_NAME = "sequence"
OUTPUT_NAME = "probability"

Version = Annotated[int, Path(ge=1, description="Model version", examples=[1])]


def input_shape(meta: ModelMeta) -> list[int]:
    """The model input's shape with a variable batch: ``[-1, max_len, n_features]`` floats, ``[-1, max_len]`` token ids."""
    return [-1, meta.max_len, meta.n_features] if meta.input_kind == "float" else [-1, meta.max_len]


def output_shape(meta: ModelMeta) -> list[int]:
    """The output's shape with a variable batch: ``[-1, width]``, width the head's units."""
    return [-1, meta.arch_params().output_width]


async def predict_sequences(
    predictor: Predictor,
    metrics: Metrics,
    name: str,
    sequences: Sequence[Sequence[Any]],
    version: int | None,
) -> tuple[int, list[list[float]]]:
    """The same path as ``/models/{name}/predict``: the version that answered and one output row per sequence."""
    servable, outputs = await predictor.predict(name, sequences, version, None)
    metrics.count_predicted(name, len(outputs))
    return servable.meta.version, outputs.tolist()
