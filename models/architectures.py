"""The five LSTM architectures: how each is built in Keras 3, and when to use which.

Every architecture is a *front* (nothing, a per-step Dense, or an Embedding), a recurrent part (LSTM or
Bidirectional LSTM) and a head chosen by the task: ``Dense(1, sigmoid)`` for ``binary`` (the question's
models, the default), ``Dense(n_classes, softmax)`` for ``multiclass`` and ``Dense(n_outputs)`` (linear)
for ``regression``. Float architectures take ``n_features`` numbers per step (default 1). All Keras models built here for one architecture
(the whole-sequence model, the seed's stateful (1, 1, 1) model and the explicit-state step model) list
their weights in the same order, so ``target.set_weights(source.get_weights())`` moves a trained model
between them exactly.

>>> arch = get_architecture("lstm")
>>> model = build_sequence_model(arch, ArchParams(max_len=20))
>>> model.output_shape
(None, 1)
"""

from dataclasses import asdict, dataclass
from typing import Any, Literal

import keras
import numpy as np

from models.errors import InvalidInput
from models.tasks import Task

InputKind = Literal["float", "tokens"]
#: ``pre``: zeros before a short sequence, as ``pad_sequences`` does (the question's models). ``masked``: the
#: model has no fixed time axis and only ever reads a sequence's own steps, so padding cannot change it.
Padding = Literal["pre", "masked"]

DEFAULT_PARAMS: dict[str, int] = {"units": 10, "vocab_size": 100, "embedding_dim": 128, "dense_units": 50}


@dataclass(frozen=True)
class ArchParams:
    """Hyper-parameters of a model. ``max_len`` is the sequence length every input is padded to."""

    max_len: int
    units: int = DEFAULT_PARAMS["units"]
    vocab_size: int = DEFAULT_PARAMS["vocab_size"]
    embedding_dim: int = DEFAULT_PARAMS["embedding_dim"]
    dense_units: int = DEFAULT_PARAMS["dense_units"]
    #: Numbers per step (float architectures only).
    n_features: int = 1
    task: Task = "binary"
    #: Classes of a ``multiclass`` head (ignored by the other tasks).
    n_classes: int = 2
    #: Values a ``regression`` head predicts (ignored by the other tasks).
    n_outputs: int = 1
    padding: Padding = "pre"

    @property
    def output_width(self) -> int:
        """Numbers the model answers per sequence: 1 (binary), ``n_classes`` or ``n_outputs``."""
        return {"binary": 1, "multiclass": self.n_classes, "regression": self.n_outputs}[self.task]

    @property
    def time_steps(self) -> int | None:
        """The model's fixed time axis: ``max_len``, or ``None`` for a masked model (any length up to it)."""
        return None if self.padding == "masked" else self.max_len

    def to_dict(self) -> dict[str, int | str]:
        """Plain dict for metadata files and responses."""
        return asdict(self)


@dataclass(frozen=True)
class Architecture:
    """One of the five named architectures and the plain-English advice that goes with it."""

    name: str
    input_kind: InputKind
    stateful: bool
    bidirectional: bool
    param_names: tuple[str, ...]
    summary: str
    when_to_use: str

    @property
    def supports_sessions(self) -> bool:
        """Step-by-step state needs a causal model: a backward pass needs the whole sequence."""
        return not self.bidirectional

    @property
    def default_params(self) -> dict[str, int]:
        """The defaults of the parameters this architecture uses (``max_len`` comes from the data)."""
        return {key: DEFAULT_PARAMS[key] for key in self.param_names}

    def relevant_params(self, params: ArchParams) -> dict[str, int]:
        """``max_len`` plus the parameters this architecture actually uses."""
        return {"max_len": params.max_len, **{key: getattr(params, key) for key in self.param_names}}

    def check_shape(self, params: ArchParams) -> None:
        """Refuse what this architecture cannot build: several features per step of token ids, a
        multiclass head of fewer than two classes, a regression head of no output, a masked stateful model."""
        if params.n_features != 1 and self.input_kind == "tokens":
            raise InvalidInput(
                f"'{self.name}' reads one token id per step; n_features applies to float architectures.",
                field="params.n_features",
                expected=1,
                got=params.n_features,
            )
        if params.task == "multiclass" and params.n_classes < 2:
            raise InvalidInput("A multiclass head needs at least 2 classes.", field="params.n_classes", expected=">= 2", got=params.n_classes)
        if params.padding == "masked" and self.stateful:
            # The saved artifact of stateful_lstm is the seed's (1, 1, n_features) model: it has no padding.
            raise InvalidInput(
                "'stateful_lstm' steps one value per call and has no padding to mask; use 'lstm' with padding \"masked\".",
                field="params.padding",
                expected="pre",
                got=params.padding,
            )


ARCHITECTURES: dict[str, Architecture] = {
    arch.name: arch
    for arch in (
        Architecture(
            name="lstm",
            input_kind="float",
            stateful=False,
            bidirectional=False,
            param_names=("units",),
            summary="LSTM(units) -> Dense(1, sigmoid) over a whole float sequence of shape (max_len, 1).",
            when_to_use=(
                "The default whole-sequence classifier: you have the complete sequence when you ask for a "
                "prediction and one number per step. Small, fast, and usually enough; try it first."
            ),
        ),
        Architecture(
            name="stateful_lstm",
            input_kind="float",
            stateful=True,
            bidirectional=False,
            param_names=("units",),
            summary=(
                "LSTM(units, stateful=True) with batch shape (1, 1, 1) -> Dense(1, sigmoid): one value per "
                "call, the LSTM state carried from call to call."
            ),
            when_to_use=(
                "Values arrive one at a time (a sensor, a stream of events) and you want a prediction after "
                "each one without resending the history. Trained on whole sequences like 'lstm'; the service "
                "keeps each session's state, so many streams share one model."
            ),
        ),
        Architecture(
            name="td_dense_lstm",
            input_kind="float",
            stateful=False,
            bidirectional=False,
            param_names=("units", "dense_units"),
            summary="TimeDistributed(Dense(dense_units)) -> LSTM(units) -> Dense(1, sigmoid) over (max_len, 1).",
            when_to_use=(
                "A cheap per-step projection before the recurrent part: the same Dense layer lifts every "
                "step into a richer feature space, which helps when single raw values are hard for a small "
                "LSTM to use (scaled, noisy or non-linear signals). Costs more parameters and time than 'lstm'."
            ),
        ),
        Architecture(
            name="embedding_lstm",
            input_kind="tokens",
            stateful=False,
            bidirectional=False,
            param_names=("units", "vocab_size", "embedding_dim"),
            summary="Embedding(vocab_size, embedding_dim) -> LSTM(units) -> Dense(1, sigmoid) over token ids.",
            when_to_use=(
                "Your steps are categories (words, event types, product ids) rather than measurements: the "
                "embedding learns a vector per token. Reads left to right, so it can also stream with sessions."
            ),
        ),
        Architecture(
            name="embedding_bilstm",
            input_kind="tokens",
            stateful=False,
            bidirectional=True,
            param_names=("units", "vocab_size", "embedding_dim"),
            summary=(
                "Embedding(vocab_size, embedding_dim) -> Bidirectional(LSTM(units)) -> Dense(1, sigmoid) "
                "over token ids."
            ),
            when_to_use=(
                "Token sequences where context on both sides matters, e.g. a cue near the end that a "
                "left-to-right LSTM has to carry through many steps. Reads the sequence in both directions, "
                "so it needs the whole sequence: no per-step sessions, and about twice the recurrent cost."
            ),
        ),
    )
}


def get_architecture(name: str) -> Architecture:
    """Look an architecture up by name; unknown names are an ``InvalidInput``."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise InvalidInput(
            f"Unknown architecture '{name}'.",
            field="architecture",
            expected=list(ARCHITECTURES),
            got=name,
        ) from None


def param_count(arch: Architecture, params: ArchParams) -> int:
    """Trainable parameters of ``arch`` built with ``params``, computed without building it."""
    if arch.input_kind == "tokens":
        front, features = params.vocab_size * params.embedding_dim, params.embedding_dim
    elif arch.name == "td_dense_lstm":
        front, features = (params.n_features + 1) * params.dense_units, params.dense_units
    else:
        front, features = 0, params.n_features
    directions = 2 if arch.bidirectional else 1
    recurrent = 4 * params.units * (features + params.units + 1)
    return front + directions * recurrent + (directions * params.units + 1) * params.output_width


def _sequence_input(arch: Architecture, params: ArchParams) -> keras.KerasTensor:
    if arch.input_kind == "tokens":
        return keras.Input(shape=(params.time_steps,), dtype="int32", name="sequence")
    return keras.Input(shape=(params.time_steps, params.n_features), dtype="float32", name="sequence")


def _front(arch: Architecture, params: ArchParams) -> list[keras.layers.Layer]:
    if arch.name == "td_dense_lstm":
        if params.time_steps is None:
            # A Dense on (batch, steps, features) is TimeDistributed(Dense), with the same two weights; on a time
            # axis of no fixed length TimeDistributed's traced loop breaks from one length's batch to the next.
            return [keras.layers.Dense(params.dense_units, name="project")]
        return [keras.layers.TimeDistributed(keras.layers.Dense(params.dense_units), name="project")]
    if arch.input_kind == "tokens":
        return [keras.layers.Embedding(params.vocab_size, params.embedding_dim, name="embedding")]
    return []


def _apply(layers: list[keras.layers.Layer], x: Any) -> Any:
    for layer in layers:
        x = layer(x)
    return x


#: The head's activation for each task.
HEAD_ACTIVATIONS: dict[Task, str] = {"binary": "sigmoid", "multiclass": "softmax", "regression": "linear"}
#: The loss each task trains with, and the metrics reported beside it (the comparison ranks by the first).
LOSSES: dict[Task, str] = {"binary": "binary_crossentropy", "multiclass": "sparse_categorical_crossentropy", "regression": "mse"}
METRICS: dict[Task, tuple[str, ...]] = {"binary": ("accuracy",), "multiclass": ("accuracy",), "regression": ("mae", "rmse")}


def _head(params: ArchParams) -> keras.layers.Dense:
    return keras.layers.Dense(params.output_width, activation=HEAD_ACTIVATIONS[params.task], name="head")


def build_sequence_model(arch: Architecture, params: ArchParams) -> keras.Model:
    """The whole-sequence model: trained for every architecture and served by ``/predict``.

    For ``stateful_lstm`` this is the stateless twin of the seed's stateful model (same weights).
    """
    inputs = _sequence_input(arch, params)
    x = _apply(_front(arch, params), inputs)
    if arch.bidirectional:
        x = keras.layers.Bidirectional(keras.layers.LSTM(params.units), name="bilstm")(x)
    else:
        x = keras.layers.LSTM(params.units, name="lstm")(x)
    return keras.Model(inputs, _head(params)(x), name=arch.name)


def build_stateful_model(arch: Architecture, params: ArchParams) -> keras.Model:
    """The seed's stateful model: one step per call with batch shape (1, 1, n_features)
    ((1, 1, 1) in the question), state kept in the layer.

    For ``stateful_lstm`` this is the saved artifact; for the other unidirectional architectures it is
    the reference that per-session stepping is tested against.
    """
    if not arch.supports_sessions:
        raise InvalidInput(f"Architecture '{arch.name}' has no stateful form: it reads both directions.")
    if arch.input_kind == "tokens":
        inputs = keras.Input(batch_shape=(1, 1), dtype="int32", name="step")
    else:
        inputs = keras.Input(batch_shape=(1, 1, params.n_features), name="step")
    x = _apply(_front(arch, params), inputs)
    x = keras.layers.LSTM(params.units, stateful=True, name="lstm")(x)
    return keras.Model(inputs, _head(params)(x), name=f"{arch.name}_stateful")


def build_step_model(arch: Architecture, params: ArchParams) -> keras.Model:
    """Explicit-state step model ``(x_t, h, c) -> (output, h', c')`` for sessions.

    The state is an input and an output rather than a layer variable, so one set of weights serves any
    number of sessions, in one batch.
    """
    if not arch.supports_sessions:
        raise InvalidInput(f"Architecture '{arch.name}' has no step model: it reads both directions.")
    if arch.input_kind == "tokens":
        x_t = keras.Input(shape=(1,), dtype="int32", name="x_t")
    else:
        x_t = keras.Input(shape=(1, params.n_features), dtype="float32", name="x_t")
    h = keras.Input(shape=(params.units,), name="h")
    c = keras.Input(shape=(params.units,), name="c")
    x = _apply(_front(arch, params), x_t)
    y, h_next, c_next = keras.layers.LSTM(params.units, return_state=True, name="lstm")(x, initial_state=[h, c])
    model = keras.Model([x_t, h, c], [_head(params)(y), h_next, c_next], name=f"{arch.name}_step")
    # Keras' ONNX export refuses a model that has never been called.
    model([np.zeros((1, *x_t.shape[1:]), x_t.dtype), np.zeros((1, params.units)), np.zeros((1, params.units))])
    return model
