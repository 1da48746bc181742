"""Checking an uploaded ``.keras`` file before Keras opens it, so a refusal costs next to nothing.

A Keras 3 ``.keras`` file is a zip (members stored, not deflated, when Keras writes it) of
``config.json`` (the model's structure: class names, layer options, input shape), ``metadata.json``
(the Keras version) and ``model.weights.h5`` (one HDF5 dataset per variable, under ``layers/``; a
compiled model adds ``optimizer/``). Keras would build the whole model from the config before anything
could be compared with this server's limits: an ``LSTM(100000)`` took 10 s and gigabytes to refuse, and
a small zip whose ``config.json`` inflates to 1 GiB raised RSS by 2 GiB. So, in order, each step bounded
by what the previous one allowed:

1. the zip's end record: how many members it declares, before ``zipfile`` parses its directory;
2. member names, declared uncompressed sizes and compression ratios (Python's ``zipfile`` never returns
   more than a member's declared size, so these bound every later read);
3. ``config.json``: its size, then its JSON nesting depth;
4. the architecture, computed from the config: exactly one of the five (layer classes, options and
   input shape), its task from the last Dense layer (sigmoid on 1 unit, softmax on k, linear), its features
   per step from the input shape, its parameter count against ``MAX_MODEL_PARAMS`` and its length against
   ``MAX_SEQUENCE_LENGTH``;
5. the weights file's declared dataset shapes (never their data) against the parameter count.

Only then does Keras open the file (in safe mode), and the weights are still verified by prediction.
"""

import io
import json
import math
import struct
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import h5py

from models.architectures import ARCHITECTURES, Architecture, ArchParams, param_count
from models.errors import InvalidModelFile, ModelNotBuilt, UnsafeModel

CONFIG = "config.json"
WEIGHTS = "model.weights.h5"
#: What Keras 3 writes for the five architectures (no assets); anything else is refused by name.
MEMBERS = frozenset({CONFIG, "metadata.json", WEIGHTS})
#: The five architectures' configs are 3-9 KB; this leaves room for long layer names and nothing else.
MAX_CONFIG_BYTES = 1024 * 1024
#: Measured: 7 levels (Bidirectional -> layer -> config -> initializer -> config ...); this leaves slack.
MAX_CONFIG_DEPTH = 32

#: The zip's "end of central directory" record: signature, 4 counts/disk numbers, size, offset, comment.
_END_RECORD = struct.Struct("<4s4H2LH")
_END_SIGNATURE = b"PK\x05\x06"

#: Layer options that change what an architecture computes, with the value each of the five uses.
#: Options that only matter while training (initializers, regularizers, dropout) are not compared.
_LSTM_OPTIONS: dict[str, Any] = {
    "activation": "tanh",
    "recurrent_activation": "sigmoid",
    "use_bias": True,
    "return_sequences": False,
    "return_state": False,
    "go_backwards": False,
}
#: The head's units and activation are not compared: together they say the task (``_head``).
_HEAD_OPTIONS: dict[str, Any] = {"use_bias": True}
_PROJECTION_OPTIONS: dict[str, Any] = {"activation": "linear", "use_bias": True}
_EMBEDDING_OPTIONS: dict[str, Any] = {"mask_zero": False}

#: Layer classes in order, for each architecture (a stateful LSTM tells ``stateful_lstm`` from ``lstm``).
_SIGNATURES: dict[tuple[str, ...], str] = {
    ("LSTM", "Dense"): "lstm",
    ("TimeDistributed", "LSTM", "Dense"): "td_dense_lstm",
    ("Embedding", "LSTM", "Dense"): "embedding_lstm",
    ("Embedding", "Bidirectional", "Dense"): "embedding_bilstm",
}


@dataclass(frozen=True)
class UploadLimits:
    """The server's caps on an upload (``MAX_UPLOAD_*``, ``MAX_MODEL_PARAMS``, ``MAX_SEQUENCE_LENGTH``)."""

    max_uncompressed_bytes: int
    max_compression_ratio: float
    max_params: int
    max_len: int


def inspect_upload(
    content: bytes, declared: str | None, max_len: int | None, limits: UploadLimits
) -> tuple[Architecture, ArchParams]:
    """Which of the five architectures ``content`` holds, with which parameters; refuses anything else.

    ``declared`` (the form's ``architecture``) must agree with the file. ``max_len`` is needed when the
    model's input has no fixed time dimension (the seed's stateful model, or ``shape=(None, 1)``).
    Raises ``InvalidModelFile`` (or ``ModelNotBuilt``, ``UnsafeModel``) naming what differs.
    """
    _check_member_count(content)
    try:
        archive = zipfile.ZipFile(io.BytesIO(content))
    except (zipfile.BadZipFile, ValueError, OSError) as exc:  # a damaged directory is the uploader's problem
        raise InvalidModelFile("The upload is not a readable zip archive.", field="file", got=str(exc)[:200]) from None
    with archive:
        _check_members(archive, limits)
        config = _read_config(archive)
        arch, params = _architecture(config, declared, max_len, limits)
        _check_weights(archive, arch, params, limits)
    return arch, params


# --- 1-2: the archive --------------------------------------------------------------------------------


def _check_member_count(content: bytes) -> None:
    """Read the member count from the zip's end record, so a directory of a million entries is never parsed."""
    start = content.rfind(_END_SIGNATURE, max(0, len(content) - _END_RECORD.size - 0xFFFF))
    if start < 0 or len(content) - start < _END_RECORD.size:
        raise InvalidModelFile(
            "The upload is not a Keras 3 '.keras' file (a zip archive).",
            field="file",
            expected="a .keras zip archive",
            got=f"{len(content)} bytes starting {content[:8]!r}",
        )
    declared_members = _END_RECORD.unpack_from(content, start)[4]
    if declared_members > len(MEMBERS):
        raise InvalidModelFile(
            f"The archive declares {declared_members} members; a .keras file has at most {len(MEMBERS)}.",
            field="file",
            expected=sorted(MEMBERS),
            got=f"{declared_members} members",
        )


def _check_members(archive: zipfile.ZipFile, limits: UploadLimits) -> None:
    members = archive.infolist()
    names = [member.filename for member in members]
    unknown = [name for name in names if name not in MEMBERS]
    if unknown or len(set(names)) != len(names) or not {CONFIG, WEIGHTS} <= set(names):
        raise InvalidModelFile(
            "The archive's members are not those of a Keras 3 .keras file.",
            field="file",
            expected=f"{CONFIG} and {WEIGHTS} (and metadata.json), once each",
            got=names[:10],
        )
    total = sum(member.file_size for member in members)
    if total > limits.max_uncompressed_bytes:
        raise InvalidModelFile(
            f"The archive unpacks to {total:,} bytes; this server takes at most {limits.max_uncompressed_bytes:,} "
            "(MAX_UPLOAD_UNCOMPRESSED_BYTES).",
            field="file",
            expected=f"at most {limits.max_uncompressed_bytes} bytes unpacked",
            got=total,
        )
    for member in members:
        ratio = member.file_size / max(member.compress_size, 1)
        if ratio > limits.max_compression_ratio:
            raise InvalidModelFile(
                f"'{member.filename}' unpacks {ratio:,.0f} times larger than it is packed; this server takes at "
                f"most {limits.max_compression_ratio:g} (MAX_UPLOAD_COMPRESSION_RATIO).",
                field="file",
                member=member.filename,
                expected=f"compression ratio <= {limits.max_compression_ratio:g}",
                got=round(ratio, 1),
            )


# --- 3: config.json ----------------------------------------------------------------------------------


def _read_config(archive: zipfile.ZipFile) -> dict[str, Any]:
    size = archive.getinfo(CONFIG).file_size
    if size > MAX_CONFIG_BYTES:
        raise InvalidModelFile(
            f"{CONFIG} is {size:,} bytes; a model of the five architectures needs a few kilobytes.",
            field="file",
            member=CONFIG,
            expected=f"at most {MAX_CONFIG_BYTES} bytes",
            got=size,
        )
    try:
        with archive.open(CONFIG) as member:
            text = member.read(MAX_CONFIG_BYTES + 1)
        config = json.loads(text)
    except RecursionError:
        raise _too_deep("more than the parser's recursion limit") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise InvalidModelFile(f"{CONFIG} is not readable JSON.", field="file", member=CONFIG, got=str(exc)[:200]) from None
    depth = _depth(config)
    if depth > MAX_CONFIG_DEPTH:
        raise _too_deep(depth)
    if not isinstance(config, dict) or not isinstance(config.get("config"), dict):
        raise InvalidModelFile(f"{CONFIG} does not describe a Keras model.", field="file", member=CONFIG)
    return config


def _too_deep(got: object) -> InvalidModelFile:
    return InvalidModelFile(
        f"{CONFIG} is nested too deeply for a model of the five architectures.",
        field="file",
        member=CONFIG,
        expected=f"nesting depth <= {MAX_CONFIG_DEPTH}",
        got=got,
    )


def _depth(value: Any) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


# --- 4: the architecture, from the config --------------------------------------------------------------


def _walk(value: Any) -> Iterator[dict[str, Any]]:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _layers(config: dict[str, Any]) -> tuple[list[dict[str, Any]], list[Any] | None]:
    """The model's layers except its input, in order, and its input's batch shape (``None``: never built)."""
    model_class = config.get("class_name")
    layers = config["config"].get("layers")
    if model_class not in ("Functional", "Sequential") or not isinstance(layers, list):
        raise InvalidModelFile(
            "The file holds a model that is not a Keras Sequential or Functional model.",
            field="file",
            expected="Sequential or Functional",
            got=str(model_class)[:100],
        )
    if not all(isinstance(layer, dict) and isinstance(layer.get("config"), dict) for layer in layers):
        raise InvalidModelFile(f"{CONFIG} lists a layer without its config.", field="file", member=CONFIG)
    inputs = [layer for layer in layers if layer.get("class_name") == "InputLayer"]
    body = [layer for layer in layers if layer.get("class_name") != "InputLayer"]
    if len(inputs) > 1:
        raise InvalidModelFile("The model has more than one input.", field="file", expected="1 input", got=len(inputs))
    if model_class == "Functional":
        _check_chain(inputs + body)
    shape = inputs[0]["config"].get("batch_shape") if inputs else config["config"].get("build_input_shape")
    return body, shape if isinstance(shape, list) else None


def _check_chain(layers: list[dict[str, Any]]) -> None:
    """A Functional model must be one straight chain: each layer called once, on the one before it."""
    for previous, layer in zip(layers, layers[1:], strict=False):
        nodes = layer.get("inbound_nodes")
        args = nodes[0].get("args") if isinstance(nodes, list) and len(nodes) == 1 and isinstance(nodes[0], dict) else None
        source = args[0].get("config", {}).get("keras_history", [None])[0] if isinstance(args, list) and len(args) == 1 and isinstance(args[0], dict) else None
        if source != previous.get("name"):
            raise InvalidModelFile(
                f"Layer '{layer.get('name')}' does not take the output of '{previous.get('name')}': the five "
                "architectures are straight chains of layers.",
                field="file",
                layer=layer.get("name"),
                expected=f"input from '{previous.get('name')}'",
                got=str(nodes)[:200],
            )


def _refuse_code(layers: list[dict[str, Any]]) -> None:
    """A Lambda layer (anywhere, e.g. wrapped) carries Python code: refused as unsafe, never deserialized."""
    for item in _walk(layers):
        if item.get("class_name") == "Lambda":
            raise UnsafeModel(
                "The model holds code (a Lambda layer) that would run when loaded; it was refused.",
                field="file",
                got="Lambda layer",
            )


def _check_options(layer: dict[str, Any], expected_class: str, options: dict[str, Any], arch: str, where: str = "") -> None:
    name = where or layer.get("config", {}).get("name") or layer.get("name")
    found_class = layer.get("class_name")
    if found_class != expected_class:
        raise InvalidModelFile(
            f"Layer '{name}' is {found_class}; a '{arch}' model has {expected_class} there.",
            field="file",
            layer=name,
            option="class_name",
            expected=expected_class,
            got=str(found_class)[:100],
        )
    config = layer.get("config", {})
    for option, value in options.items():
        found = config.get(option, "<missing>")
        if found != value or type(found) is not type(value):
            raise InvalidModelFile(
                f"Layer '{name}' ({expected_class}) has {option}={found!r}; a '{arch}' model uses {option}={value!r}.",
                field="file",
                layer=name,
                option=option,
                expected=value,
                got=found if isinstance(found, (str, int, float, bool)) else str(found)[:100],
            )


def _size(layer: dict[str, Any], option: str) -> int:
    value = layer.get("config", {}).get(option)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidModelFile(
            f"Layer '{layer.get('config', {}).get('name')}' has {option}={value!r}.",
            field="file",
            layer=layer.get("config", {}).get("name"),
            option=option,
            expected="a positive integer",
            got=str(value)[:100],
        )
    return value


def _identify(layers: list[dict[str, Any]], declared: str | None) -> Architecture:
    signature = tuple(str(layer.get("class_name")) for layer in layers)
    name = _SIGNATURES.get(signature)
    if name == "lstm" and layers[0]["config"].get("stateful") is True:
        name = "stateful_lstm"
    if name is None:
        raise InvalidModelFile(
            "The model's layers match none of the five architectures.",
            field="file",
            expected={arch: " -> ".join(sig) for sig, arch in _SIGNATURES.items()},
            got=" -> ".join(signature)[:200],
        )
    if declared is not None and declared != name:
        raise InvalidModelFile(
            f"The file holds a '{name}' model, not the declared '{declared}'.",
            field="architecture",
            expected=name,
            got=declared,
        )
    return ARCHITECTURES[name]


def _head(head: dict[str, Any], arch: str) -> dict[str, Any]:
    """The task the last Dense layer answers: sigmoid on 1 unit is binary, softmax on k >= 2 multiclass,
    linear on k regression (any other pairing is refused, naming the head)."""
    _check_options(head, "Dense", _HEAD_OPTIONS, arch)
    units = _size(head, "units")
    activation = head.get("config", {}).get("activation")
    if activation == "sigmoid" and units == 1:
        return {"task": "binary"}
    if activation == "softmax" and units >= 2:
        return {"task": "multiclass", "n_classes": units}
    if activation == "linear":
        return {"task": "regression", "n_outputs": units}
    name = head.get("config", {}).get("name")
    raise InvalidModelFile(
        f"Layer '{name}' (Dense) has activation={activation!r} on {units} unit(s); a head is sigmoid on 1 unit "
        "(binary), softmax on 2 or more (multiclass) or linear (regression).",
        field="file",
        layer=name,
        option="activation",
        expected=["sigmoid", "linear"] if units == 1 else ["softmax", "linear"],
        got=activation if isinstance(activation, str) else str(activation)[:100],
    )


def _params(arch: Architecture, layers: list[dict[str, Any]]) -> dict[str, Any]:
    """Check every layer's class and options against ``arch``; return its sizes (units, vocabulary...) and task."""
    *front, recurrent, head = layers
    values: dict[str, Any] = _head(head, arch.name)
    lstm_options = {**_LSTM_OPTIONS, "stateful": arch.stateful}
    if arch.bidirectional:
        _check_options(recurrent, "Bidirectional", {"merge_mode": "concat"}, arch.name)
        forward = recurrent["config"].get("layer")
        backward = recurrent["config"].get("backward_layer")
        name = recurrent["config"].get("name")
        _check_options(forward if isinstance(forward, dict) else {}, "LSTM", lstm_options, arch.name, f"{name}.layer")
        units = _size(forward, "units")
        if backward is not None:
            where = f"{name}.backward_layer"
            options = {**lstm_options, "go_backwards": True, "units": units}
            _check_options(backward if isinstance(backward, dict) else {}, "LSTM", options, arch.name, where)
    else:
        _check_options(recurrent, "LSTM", lstm_options, arch.name)
        units = _size(recurrent, "units")
    values["units"] = units
    if arch.input_kind == "tokens":
        _check_options(front[0], "Embedding", _EMBEDDING_OPTIONS, arch.name)
        values.update(vocab_size=_size(front[0], "input_dim"), embedding_dim=_size(front[0], "output_dim"))
    elif front:
        inner = front[0]["config"].get("layer")
        where = f"{front[0]['config'].get('name')}.layer"
        _check_options(inner if isinstance(inner, dict) else {}, "Dense", _PROJECTION_OPTIONS, arch.name, where)
        values["dense_units"] = _size(inner, "units")
    return values


def _how_to_build(arch: Architecture) -> str:
    if arch.stateful:
        first = "keras.Input(batch_shape=(1, 1, n_features))"
    elif arch.input_kind == "tokens":
        first = 'keras.Input(shape=(max_len,), dtype="int32")'
    else:
        first = "keras.Input(shape=(max_len, n_features))"
    build = "model.build((None, max_len))" if arch.input_kind == "tokens" else "model.build((None, max_len, n_features))"
    return f"start the model with {first}, or call {build} before model.save(...)"


def _positive(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _time_steps(arch: Architecture, shape: list[Any] | None) -> tuple[int | None, int]:
    """The fixed sequence length the input declares (``None``: not fixed) and its features per step;
    refuses a wrong input shape."""
    if shape is None:
        raise ModelNotBuilt(
            "The model was saved before it was built: it has no input shape, so the file holds no weights. "
            f"Build or train it, then save it again: {_how_to_build(arch)}.",
            field="file",
            expected="a built model (an input shape and weights)",
            got="no input shape",
            fix=_how_to_build(arch),
        )
    features = shape[2] if len(shape) == 3 and _positive(shape[2]) else 1
    if arch.stateful:
        expected: list[Any] = [1, 1, "n_features"]
        fits = shape[:2] == [1, 1] and len(shape) == 3 and _positive(shape[2])
    elif arch.input_kind == "tokens":
        expected = [None, "max_len"]
        fits = len(shape) == 2
    else:
        expected = [None, "max_len", "n_features"]
        fits = len(shape) == 3 and _positive(shape[2])
    steps = None if arch.stateful or not fits else shape[1]
    if not fits or not (steps is None or (isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1)):
        raise InvalidModelFile(
            f"The model's input shape is {shape}; a '{arch.name}' model takes {expected}.",
            field="file",
            option="input shape",
            expected=expected,
            got=str(shape)[:100],
        )
    return steps, features


def _architecture(
    config: dict[str, Any], declared: str | None, max_len: int | None, limits: UploadLimits
) -> tuple[Architecture, ArchParams]:
    layers, shape = _layers(config)
    _refuse_code(layers)
    arch = _identify(layers, declared)
    values = _params(arch, layers)
    time_steps, values["n_features"] = _time_steps(arch, shape)
    resolved = max_len or time_steps
    if resolved is None:
        raise InvalidModelFile(
            "The model has no fixed sequence length; send the form field 'max_len'.",
            field="max_len",
            expected="a positive integer",
            got=None,
        )
    if time_steps is not None and max_len is not None and max_len != time_steps:
        raise InvalidModelFile(
            f"The model's input is {time_steps} steps long, not max_len={max_len}.",
            field="max_len",
            expected=time_steps,
            got=max_len,
        )
    if resolved > limits.max_len:
        raise InvalidModelFile(
            f"The model takes sequences of {resolved:,} steps; this server takes at most {limits.max_len:,} "
            "(MAX_SEQUENCE_LENGTH).",
            field="max_len",
            expected=f"at most {limits.max_len}",
            got=resolved,
        )
    params = replace(ArchParams(max_len=resolved), **values)
    size = param_count(arch, params)
    if size > limits.max_params:
        raise InvalidModelFile(
            f"The model has {size:,} parameters; this server serves at most {limits.max_params:,} (MAX_MODEL_PARAMS).",
            field="file",
            expected=f"at most {limits.max_params} parameters",
            got=size,
        )
    return arch, params


# --- 5: the weights' declared shapes -----------------------------------------------------------------


def _check_weights(archive: zipfile.ZipFile, arch: Architecture, params: ArchParams, limits: UploadLimits) -> None:
    """Compare the weights file's declared dataset sizes with the model (no dataset is read)."""
    declared_bytes = 0
    layer_values = 0
    try:
        with h5py.File(io.BytesIO(archive.read(WEIGHTS)), "r") as weights:
            datasets: list[tuple[str, h5py.Dataset]] = []
            weights.visititems(lambda path, item: datasets.append((path, item)) if isinstance(item, h5py.Dataset) else None)
            for path, dataset in datasets:
                values = math.prod(dataset.shape or ())
                declared_bytes += values * dataset.dtype.itemsize
                if path.startswith("layers/"):
                    layer_values += values
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise InvalidModelFile(f"{WEIGHTS} is not a readable HDF5 file.", field="file", member=WEIGHTS, got=str(exc)[:200]) from None
    if declared_bytes > limits.max_uncompressed_bytes:
        raise InvalidModelFile(
            f"{WEIGHTS} declares {declared_bytes:,} bytes of weights; this server takes at most "
            f"{limits.max_uncompressed_bytes:,} (MAX_UPLOAD_UNCOMPRESSED_BYTES).",
            field="file",
            member=WEIGHTS,
            expected=f"at most {limits.max_uncompressed_bytes} bytes",
            got=declared_bytes,
        )
    expected = param_count(arch, params)
    if layer_values == 0:
        raise ModelNotBuilt(
            "The file holds no weights: the model was saved before it was built. "
            f"Build or train it, then save it again: {_how_to_build(arch)}.",
            field="file",
            expected=f"{expected} weights",
            got=0,
            fix=_how_to_build(arch),
        )
    if layer_values != expected:
        raise InvalidModelFile(
            f"{WEIGHTS} holds {layer_values:,} weights; the '{arch.name}' model its config describes has {expected:,}.",
            field="file",
            member=WEIGHTS,
            expected=expected,
            got=layer_values,
        )
