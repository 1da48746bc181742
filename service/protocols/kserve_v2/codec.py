"""One decode and encode of V2 inference for HTTP (JSON, or JSON plus the binary tensor data extension) and gRPC.

Each transport turns its request into the same ``InferCall`` (``call_from_http``, ``call_from_grpc``);
``batch_of`` checks it against the model's metadata as Triton does (one input, named ``sequence``, of the
model's datatype) and decodes the values with one rule whatever they came as: FP32 values must be finite
(binary FP32 can carry NaN and infinities just as JSON can), INT32 values whole numbers; the padding, length
and token-id rules then come from ``models.inputs`` as on every route. ``http_response`` and
``grpc_response`` encode the ``InferAnswer``.
"""

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi.responses import JSONResponse, Response
from tritonclient.grpc import service_pb2 as pb

from models.errors import InvalidInput
from models.serving.servable import ModelMeta
from models.inputs import check_number
from service.protocols.common import INPUT_NAME, OUTPUT_NAME
from service.protocols.kserve_v2.schemas import V2InferRequest, V2InferResponse, V2ResponseOutput

#: The binary tensor data extension's header: how many leading body bytes are the JSON part.
HEADER_LENGTH = "Inference-Header-Content-Length"

#: The input datatype of each model input kind, and how its values travel as binary (little-endian).
DATATYPES = {"float": "FP32", "tokens": "INT32"}
_BINARY = {"FP32": np.dtype("<f4"), "INT32": np.dtype("<i4")}
#: Where gRPC carries each datatype's values when they are not in ``raw_input_contents``.
_GRPC_CONTENTS = {"FP32": "fp32_contents", "INT32": "int_contents"}
_INT32 = np.iinfo(np.int32)


@dataclass(frozen=True)
class Tensor:
    """One input tensor as sent: values as (nested) numbers in ``data``, or as raw bytes in ``raw``."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: Any = None
    raw: bytes | None = None


@dataclass(frozen=True)
class SequenceControl:
    """Triton's sequence extension: which sequence a request steps, and whether it starts or ends it."""

    sequence_id: int | str
    start: bool
    end: bool


@dataclass(frozen=True)
class InferCall:
    """A V2 inference request, whatever transport it came by."""

    model: str
    version: int | None
    request_id: str | None
    inputs: list[Tensor]
    #: Requested output names, each with whether it is wanted as binary (HTTP only).
    outputs: dict[str, bool]
    binary_output: bool
    sequence: SequenceControl | None


@dataclass(frozen=True)
class InferAnswer:
    """The outputs that answer an ``InferCall``: ``[n, width]`` (width 1 for a binary model's probability), one
    row per sequence (per step in a sequence)."""

    call: InferCall
    version: int
    probabilities: np.ndarray

    @property
    def binary(self) -> bool:
        """Whether HTTP answers the output as binary: the output's own ``binary_data``, else ``binary_data_output``."""
        return self.call.outputs.get(OUTPUT_NAME, self.call.binary_output)


# --- decoding -----------------------------------------------------------------------------------------


def _flag(parameters: Mapping[str, Any], key: str) -> bool:
    value = parameters.get(key, False)
    if not isinstance(value, bool):
        raise InvalidInput(f"parameters.{key}: expected true or false, got {value!r}.", field=f"parameters.{key}",
                           expected="a boolean", got=value)
    return value


def sequence_of(parameters: Mapping[str, Any]) -> SequenceControl | None:
    """The request's place in a Triton sequence; ``None`` outside one (no ``sequence_id``, or 0 or "")."""
    sequence_id = parameters.get("sequence_id", 0)
    start, end = _flag(parameters, "sequence_start"), _flag(parameters, "sequence_end")
    if isinstance(sequence_id, bool) or not isinstance(sequence_id, (int, str)):
        raise InvalidInput(
            f"parameters.sequence_id: expected an integer or a string, got {sequence_id!r}.",
            field="parameters.sequence_id", expected="an integer or a string", got=sequence_id,
        )
    if sequence_id in (0, ""):
        if start or end:
            raise InvalidInput(
                "parameters.sequence_id: sequence_start and sequence_end need a non-zero sequence_id.",
                field="parameters.sequence_id", expected="a non-zero integer or a non-empty string", got=sequence_id,
            )
        return None
    return SequenceControl(sequence_id, start, end)


def split_binary(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The JSON part and the binary section of a body under the binary tensor data extension."""
    if header_length is None:
        return body, b""
    if not header_length.isdigit() or int(header_length) > len(body):
        raise InvalidInput(
            f"{HEADER_LENGTH}: expected the byte length of the JSON part (at most the body's {len(body)} bytes), "
            f"got '{header_length}'.",
            field=HEADER_LENGTH,
            expected=f"an integer <= {len(body)}",
            got=header_length,
        )
    return body[: int(header_length)], body[int(header_length) :]


def call_from_http(model: str, version: int | None, body: V2InferRequest, binary: bytes) -> InferCall:
    """An HTTP request: the JSON part, and the binary section after it (empty without the extension)."""
    inputs = []
    offset = 0
    for i, tensor in enumerate(body.inputs):
        size = (tensor.parameters or {}).get("binary_data_size")
        raw = None
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise InvalidInput(
                    f"inputs[{i}].parameters.binary_data_size: expected a byte count within the "
                    f"{len(binary) - offset} bytes of binary data left, got {size!r}.",
                    field=f"inputs[{i}].parameters.binary_data_size",
                    expected=f"0 <= size <= {len(binary) - offset}",
                    got=size,
                )
            raw = binary[offset : offset + size]
            offset += size
        if (raw is None) == (tensor.data is None):
            raise InvalidInput(
                f"inputs[{i}]: send the values either as 'data' or as binary ('binary_data_size'), exactly one.",
                field=f"inputs[{i}].data", expected="data or parameters.binary_data_size", got=tensor.data,
            )
        inputs.append(Tensor(tensor.name, tensor.datatype, tuple(tensor.shape), tensor.data, raw))
    if offset != len(binary):
        raise InvalidInput(
            f"{HEADER_LENGTH}: {len(binary) - offset} bytes follow the JSON part that no input's binary_data_size claims.",
            field=HEADER_LENGTH, expected=f"{offset} bytes of binary data", got=len(binary),
        )
    parameters = body.parameters or {}
    outputs = {output.name: _flag(output.parameters or {}, "binary_data") for output in body.outputs or []}
    return InferCall(
        model, version, body.id, inputs, outputs, _flag(parameters, "binary_data_output"), sequence_of(parameters)
    )


def _grpc_parameters(parameters: Mapping[str, pb.InferParameter]) -> dict[str, Any]:
    values = {}
    for key, parameter in parameters.items():
        choice = parameter.WhichOneof("parameter_choice")
        if choice is not None:
            values[key] = getattr(parameter, choice)
    return values


def call_from_grpc(request: pb.ModelInferRequest) -> InferCall:
    """A gRPC ``ModelInferRequest``: values in ``raw_input_contents`` (what clients send by default) or ``contents``."""
    raws = list(request.raw_input_contents)
    if raws and len(raws) != len(request.inputs):
        raise InvalidInput(
            f"raw_input_contents: expected one entry per input ({len(request.inputs)}), got {len(raws)}.",
            field="raw_input_contents", expected=len(request.inputs), got=len(raws),
        )
    inputs = []
    for i, tensor in enumerate(request.inputs):
        contents = _GRPC_CONTENTS.get(tensor.datatype)
        data = list(getattr(tensor.contents, contents)) if contents and not raws else None
        inputs.append(Tensor(tensor.name, tensor.datatype, tuple(tensor.shape), data, raws[i] if raws else None))
    return InferCall(
        model=request.model_name,
        version=parse_version(request.model_version),
        request_id=request.id or None,
        inputs=inputs,
        outputs={output.name: True for output in request.outputs},
        binary_output=True,
        sequence=sequence_of(_grpc_parameters(request.parameters)),
    )


def parse_version(text: str) -> int | None:
    """A version as gRPC carries it: ``""`` for the latest, else a positive integer."""
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise InvalidInput(f"model_version: expected a positive integer, got '{text}'.", field="model_version",
                           expected="a positive integer", got=text)
    return int(text)


def _leaves(data: Any) -> Iterator[Any]:
    if isinstance(data, list):
        for item in data:
            yield from _leaves(item)
    else:
        yield data


def _values(tensor: Tensor, field: str) -> np.ndarray:
    """The tensor's values, flat, in its datatype; one rule whether they came as numbers or as bytes."""
    if tensor.raw is not None:
        dtype = _BINARY[tensor.datatype]
        if len(tensor.raw) % dtype.itemsize:
            raise InvalidInput(
                f"{field}: {len(tensor.raw)} bytes of binary data is not a whole number of {tensor.datatype} values.",
                field=field, expected=f"a multiple of {dtype.itemsize} bytes", got=len(tensor.raw),
            )
        values = np.frombuffer(tensor.raw, dtype)
    else:
        flat = [check_number(value, f"{field}[{k}]") for k, value in enumerate(_leaves(tensor.data))]
        if tensor.datatype == "INT32":
            for k, value in enumerate(flat):
                if (isinstance(value, float) and not value.is_integer()) or not _INT32.min <= value <= _INT32.max:
                    raise InvalidInput(f"{field}[{k}]: expected an INT32 token id, got {value}.", field=f"{field}[{k}]",
                                       expected="a whole number within int32", got=value)
            values = np.asarray(flat, dtype=np.int64).astype(np.int32)
        else:
            values = np.asarray(flat, dtype=np.float64).astype(np.float32)
    if tensor.datatype == "FP32":
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            k = int(bad[0])
            raise InvalidInput(f"{field}[{k}]: expected a finite FP32 number, got {float(values[k])}.",
                               field=f"{field}[{k}]", expected="a finite number", got=float(values[k]))
    return values


def batch_of(call: InferCall, meta: ModelMeta) -> np.ndarray:
    """The call's one input as a ``[batch, steps]`` array (``[batch, steps, n_features]`` for a model of several
    features per step), checked against the model's metadata as Triton does."""
    model = call.model
    if len(call.inputs) != 1:
        raise InvalidInput(
            f"expected 1 inputs but got {len(call.inputs)} inputs for model '{model}'",
            field="inputs", expected=[INPUT_NAME], got=[tensor.name for tensor in call.inputs],
        )
    for name in call.outputs:
        if name != OUTPUT_NAME:
            raise InvalidInput(f"unexpected inference output '{name}' for model '{model}'", field="outputs",
                               expected=[OUTPUT_NAME], got=name)
    tensor = call.inputs[0]
    if tensor.name != INPUT_NAME:
        raise InvalidInput(f"unexpected inference input '{tensor.name}' for model '{model}'; its input is "
                           f"'{INPUT_NAME}'", field="inputs[0].name", expected=INPUT_NAME, got=tensor.name)
    datatype = DATATYPES[meta.input_kind]
    if tensor.datatype != datatype:
        raise InvalidInput(
            f"inference input '{INPUT_NAME}' data-type is '{tensor.datatype}', but model '{model}' expects '{datatype}'",
            field="inputs[0].datatype", expected=datatype, got=tensor.datatype,
        )
    shape = tensor.shape
    width = meta.n_features
    if width == 1:
        expected, fits = "[batch, steps] or [batch, steps, 1]", len(shape) == 2 or (len(shape) == 3 and shape[2] == 1)
    else:
        expected, fits = f"[batch, steps, {width}]", len(shape) == 3 and shape[2] == width
    if not fits or 0 in shape:
        raise InvalidInput(
            f"inputs[0].shape: expected {expected} with batch, steps >= 1, got {list(shape)}.",
            field="inputs[0].shape", expected=expected, got=list(shape),
        )
    if call.sequence is not None and shape[0] != 1:
        one = "[1, steps] or [1, steps, 1]" if width == 1 else f"[1, steps, {width}]"
        raise InvalidInput(
            f"inputs[0].shape: a request in sequence {call.sequence.sequence_id} carries the next values of one "
            f"sequence (batch 1, e.g. {one.split(' or ')[0]}), got a batch of {shape[0]}.",
            field="inputs[0].shape", expected=one, got=list(shape),
        )
    values = _values(tensor, "inputs[0].data")
    if values.size != math.prod(shape):
        raise InvalidInput(
            f"inputs[0]: shape {list(shape)} holds {math.prod(shape)} values but {values.size} were sent.",
            field="inputs[0].data", expected=f"{math.prod(shape)} values", got=int(values.size),
        )
    return values.reshape(shape[0], shape[1]) if width == 1 else values.reshape(shape)


# --- encoding -----------------------------------------------------------------------------------------


def _output_shape(answer: InferAnswer) -> list[int]:
    return list(answer.probabilities.shape)


def http_response(answer: InferAnswer) -> Response:
    """JSON, or (binary requested) the JSON part then the FP32 bytes, with ``Inference-Header-Content-Length``."""
    call = answer.call
    output = V2ResponseOutput(name=OUTPUT_NAME, shape=_output_shape(answer))
    raw = b""
    if answer.binary:
        raw = answer.probabilities.astype("<f4").tobytes()
        output.parameters = {"binary_data_size": len(raw)}
    else:
        output.data = answer.probabilities.reshape(-1).tolist()
    body = V2InferResponse(
        model_name=call.model, model_version=str(answer.version), id=call.request_id, outputs=[output]
    ).model_dump(exclude_none=True)
    if not answer.binary:
        return JSONResponse(body)
    header = json.dumps(body, separators=(",", ":")).encode()
    return Response(header + raw, media_type="application/octet-stream", headers={HEADER_LENGTH: str(len(header))})


def grpc_response(answer: InferAnswer) -> pb.ModelInferResponse:
    """A ``ModelInferResponse`` with the output in ``raw_output_contents``, as Triton answers."""
    call = answer.call
    return pb.ModelInferResponse(
        model_name=call.model,
        model_version=str(answer.version),
        id=call.request_id or "",
        outputs=[pb.ModelInferResponse.InferOutputTensor(name=OUTPUT_NAME, datatype="FP32", shape=_output_shape(answer))],
        raw_output_contents=[answer.probabilities.astype("<f4").tobytes()],
    )
