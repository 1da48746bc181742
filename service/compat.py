"""What the TF Serving and KServe V2 routes share: tensors in those protocols' JSON become the list of
sequences that ``/models/{name}/predict`` takes, and go through the same ``Predictor``.

Only the shape of the JSON is checked here (nesting, declared shape and datatype); the number rule,
padding, length and token-id rules stay in ``models.inputs`` so every route applies the same ones. Errors are
``InvalidInput`` with the offending field in the message, since these protocols answer only
``{"error": "<message>"}``.
"""

import math
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import Path

from models.errors import InvalidInput, VersionNotFound
from models.inputs import check_number, describe
from models.serving.predictor import Predictor
from models.serving.store import ModelStore
from service.compat_schemas import V2RequestInput, V2RequestOutput
from service.metrics import Metrics

#: The one input and the one output every lstm-serve model has, as both protocols name them.
INPUT_NAME = "sequence"
OUTPUT_NAME = "probability"
#: KServe datatypes accepted for each input kind.
V2_DATATYPES = {"float": ("FP32", "FP64"), "tokens": ("INT32", "INT64")}

Version = Annotated[int, Path(ge=1, description="Model version", examples=[1])]


def input_shape(input_kind: str, max_len: int) -> list[int]:
    """The model input's shape with a variable batch: ``[-1, max_len, 1]`` floats, ``[-1, max_len]`` token ids."""
    return [-1, max_len, 1] if input_kind == "float" else [-1, max_len]


def check_version(store: ModelStore, name: str, version: int) -> None:
    """``ModelNotFound`` / ``VersionNotFound`` unless ``name`` has ``version``, without loading it."""
    versions = store.info(name).versions
    if version not in versions:
        raise VersionNotFound(f"Model '{name}' has no version {version}.", field="version", expected=versions, got=version)


def _sequence(steps: Any, field: str) -> list[float]:
    """One sequence: each step a number, or a 1-element list (an instance of shape ``[steps, 1]``)."""
    if not isinstance(steps, list):
        raise InvalidInput(
            f"{field}: expected a sequence (a list of numbers or of 1-element lists), got {describe(steps)}.",
            field=field,
            expected="a list",
            got=steps,
        )
    values = []
    for j, step in enumerate(steps):
        if isinstance(step, list):
            if len(step) != 1:
                raise InvalidInput(
                    f"{field}[{j}]: each step is one number or a 1-element list, got a list of {len(step)}.",
                    field=f"{field}[{j}]",
                    expected="a 1-element list",
                    got=len(step),
                )
            step = step[0]
        values.append(check_number(step, f"{field}[{j}]"))
    return values


def _single_input(named: dict[str, Any], field: str) -> tuple[str, Any]:
    """The value of an object that names the model's one input (under whatever name the client uses)."""
    if len(named) != 1:
        raise InvalidInput(
            f"{field}: the model has one input, '{INPUT_NAME}'; got {len(named)} named inputs {sorted(named)}.",
            field=field,
            expected=[INPUT_NAME],
            got=sorted(named),
        )
    return next(iter(named.items()))


def sequences_from_instances(instances: list[Any]) -> list[list[float]]:
    """TF Serving row format: one sequence per instance, bare or as ``{"<input name>": sequence}``."""
    if not instances:
        raise InvalidInput("instances: send at least one instance.", field="instances", expected="a non-empty list", got=[])
    sequences = []
    for i, instance in enumerate(instances):
        field = f"instances[{i}]"
        if isinstance(instance, dict):
            key, instance = _single_input(instance, field)
            field = f"{field}.{key}"
        sequences.append(_sequence(instance, field))
    return sequences


def sequences_from_inputs(inputs: list[Any] | dict[str, Any]) -> list[list[float]]:
    """TF Serving columnar format: the whole batch, bare or as ``{"<input name>": batch}``."""
    field = "inputs"
    if isinstance(inputs, dict):
        key, inputs = _single_input(inputs, field)
        field = f"inputs.{key}"
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput(f"{field}: expected a non-empty list of sequences.", field=field, expected="a non-empty list", got=inputs)
    return [_sequence(sequence, f"{field}[{i}]") for i, sequence in enumerate(inputs)]


def _flatten(data: list[Any], field: str) -> list[float]:
    """Row-major values of a flat or nested tensor."""
    flat: list[float] = []

    def walk(value: Any, where: str) -> None:
        if isinstance(value, list):
            for k, item in enumerate(value):
                walk(item, f"{where}[{k}]")
        else:
            flat.append(check_number(value, where))

    walk(data, field)
    return flat


def sequences_from_tensor(tensor: V2RequestInput, input_kind: str) -> list[list[float]]:
    """KServe V2 input tensor of shape ``[batch, steps]`` or ``[batch, steps, 1]``: one sequence per row."""
    allowed = V2_DATATYPES[input_kind]
    if tensor.datatype not in allowed:
        raise InvalidInput(
            f"inputs[0].datatype: this model takes {' or '.join(allowed)} input, got '{tensor.datatype}'.",
            field="inputs[0].datatype",
            expected=list(allowed),
            got=tensor.datatype,
        )
    shape = tensor.shape
    if len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] != 1) or 0 in shape:
        raise InvalidInput(
            f"inputs[0].shape: expected [batch, steps] or [batch, steps, 1] with batch, steps >= 1, got {shape}.",
            field="inputs[0].shape",
            expected="[batch, steps] or [batch, steps, 1]",
            got=shape,
        )
    flat = _flatten(tensor.data, "inputs[0].data")
    size = math.prod(shape)
    if len(flat) != size:
        raise InvalidInput(
            f"inputs[0]: shape {shape} holds {size} values but data has {len(flat)}.",
            field="inputs[0].data",
            expected=f"{size} values",
            got=len(flat),
        )
    steps = shape[1]
    return [flat[row * steps : (row + 1) * steps] for row in range(shape[0])]


def check_outputs(outputs: list[V2RequestOutput] | None) -> None:
    """Requested outputs may only name the one output the model has."""
    for i, output in enumerate(outputs or []):
        if output.name != OUTPUT_NAME:
            raise InvalidInput(
                f"outputs[{i}].name: the model has one output, '{OUTPUT_NAME}'; got '{output.name}'.",
                field=f"outputs[{i}].name",
                expected=[OUTPUT_NAME],
                got=output.name,
            )


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
