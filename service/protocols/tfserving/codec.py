"""TF Serving's JSON tensors to the list of sequences that ``/models/{name}/predict`` takes.

Only the shape of the JSON is checked here (numbers, nesting, named inputs); padding, length and token-id
rules stay in ``models.inputs`` so every route applies the same ones. Errors are ``InvalidInput`` with the
offending field in the message, since TF Serving answers only ``{"error": "<message>"}``.
"""

from typing import Any

from models.errors import InvalidInput
from models.inputs import check_number, describe
from service.protocols.common import INPUT_NAME


def _step(step: Any, n_features: int, field: str) -> float | list[float]:
    """One step: a number or a 1-element list for a one-feature model (an instance of shape ``[steps, 1]``),
    a list of ``n_features`` numbers otherwise (shape ``[steps, n_features]``)."""
    if n_features == 1:
        if isinstance(step, list):
            if len(step) != 1:
                raise InvalidInput(
                    f"{field}: each step is one number or a 1-element list, got a list of {len(step)}.",
                    field=field,
                    expected="a 1-element list",
                    got=len(step),
                )
            step = step[0]
        return check_number(step, field)
    if not isinstance(step, list) or len(step) != n_features:
        got = f"a list of {len(step)}" if isinstance(step, list) else describe(step)
        raise InvalidInput(
            f"{field}: each step is a list of {n_features} numbers (n_features), got {got}.",
            field=field,
            expected=f"a {n_features}-element list",
            got=len(step) if isinstance(step, list) else step,
        )
    return [check_number(value, f"{field}[{k}]") for k, value in enumerate(step)]


def _sequence(steps: Any, n_features: int, field: str) -> list[float | list[float]]:
    """One sequence: a list of steps."""
    if not isinstance(steps, list):
        raise InvalidInput(
            f"{field}: expected a sequence (a list of numbers or of lists of numbers), got {describe(steps)}.",
            field=field,
            expected="a list",
            got=steps,
        )
    return [_step(step, n_features, f"{field}[{j}]") for j, step in enumerate(steps)]


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


def sequences_from_instances(instances: list[Any], n_features: int) -> list[list[float | list[float]]]:
    """Row format: one sequence per instance, bare or as ``{"<input name>": sequence}``."""
    if not instances:
        raise InvalidInput("instances: send at least one instance.", field="instances", expected="a non-empty list", got=[])
    sequences = []
    for i, instance in enumerate(instances):
        field = f"instances[{i}]"
        if isinstance(instance, dict):
            key, instance = _single_input(instance, field)
            field = f"{field}.{key}"
        sequences.append(_sequence(instance, n_features, field))
    return sequences


def sequences_from_inputs(inputs: list[Any] | dict[str, Any], n_features: int) -> list[list[float | list[float]]]:
    """Columnar format: the whole batch, bare or as ``{"<input name>": batch}``."""
    field = "inputs"
    if isinstance(inputs, dict):
        key, inputs = _single_input(inputs, field)
        field = f"inputs.{key}"
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput(f"{field}: expected a non-empty list of sequences.", field=field, expected="a non-empty list", got=inputs)
    return [_sequence(sequence, n_features, f"{field}[{i}]") for i, sequence in enumerate(inputs)]
