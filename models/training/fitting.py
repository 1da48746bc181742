"""Training one architecture on one dataset, as a background job that ends in a stored version."""

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import keras
import numpy as np

from models.architectures import (
    LOSSES,
    METRICS,
    Architecture,
    ArchParams,
    build_sequence_model,
    build_stateful_model,
    get_architecture,
    param_count,
)
from models.training.datasets import Dataset, get_dataset
from models.errors import InvalidInput, InvalidValue, TrainingTimeExceeded
from models.inputs import check_number, check_padded_size, to_model_input, true_lengths
from models.training.jobs import JobContext, Work
from models.serving.model_index import ModelIndex

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingData:
    """Model-ready arrays: ``x`` float ``(n, max_len, n_features)`` (NaN-padded for a masked model) or int
    ``(n, max_len)``; ``y`` 0/1 ``(n,)`` (binary), class ids ``(n,)`` or targets ``(n, n_outputs)``."""

    x: np.ndarray
    y: np.ndarray
    source: str

    @property
    def max_len(self) -> int:
        """Sequence length the arrays are padded to."""
        return int(self.x.shape[1])


@dataclass(frozen=True)
class RawData:
    """Training data before it is shaped for an architecture: the caller's, or a built-in dataset generated
    once (a comparison shapes the same generated arrays for every candidate)."""

    sequences: Sequence[Sequence[float]] | np.ndarray
    labels: Sequence[float] | np.ndarray
    dataset: Dataset | None = None

    @classmethod
    def load(
        cls,
        *,
        sequences: Sequence[Sequence[float]] | None,
        labels: Sequence[float] | None,
        dataset: str | None,
        seed: int,
    ) -> "RawData":
        """The caller's sequences and labels, or the built-in ``dataset`` generated from ``seed``."""
        if dataset is not None:
            builtin = get_dataset(dataset)
            x, y = builtin.generate(seed)
            return cls(x, y, builtin)
        assert sequences is not None and labels is not None, "the request schema demands data or dataset"
        return cls(sequences, labels)

    @property
    def source(self) -> str:
        """Where the data came from, as model metadata records it."""
        return "request" if self.dataset is None else f"dataset:{self.dataset.name}"


@dataclass(frozen=True)
class FitSettings:
    """How to fit: the same for every architecture of a comparison."""

    epochs: int = 5
    batch_size: int = 32
    validation_split: float = 0.2
    seed: int = 0
    #: Wall-time cap of one fit (``MAX_TRAIN_SECONDS``); ``None`` means no cap.
    max_seconds: float | None = None
    #: Largest model one job may build (``MAX_MODEL_PARAMS``); ``None`` means no cap.
    max_params: int | None = None
    #: Longest sequence length a model may take (``MAX_SEQUENCE_LENGTH``), given or taken from the data.
    max_len: int | None = None
    #: Most values the padded training array may hold (``MAX_PADDED_VALUES``), checked before it exists.
    max_values: int | None = None


@dataclass
class FitResult:
    """A fitted whole-sequence model with its per-epoch history and the wall time it took."""

    model: keras.Model
    history: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0

    def final_metrics(self) -> dict[str, float]:
        """Last epoch's value of each metric."""
        return {key: values[-1] for key, values in self.history.items() if values}


def resolve_params(
    arch: Architecture, overrides: dict[str, int], data_max_len: int | None, settings: FitSettings
) -> ArchParams:
    """Defaults, then the caller's overrides; ``max_len`` defaults to the longest training sequence.

    A ``max_len`` over ``settings.max_len`` or a model larger than ``settings.max_params`` is refused
    before anything is built.
    """
    max_len = overrides.get("max_len") or data_max_len
    if max_len is None:
        raise InvalidInput("Give params.max_len or training data to take it from.", field="params.max_len")
    if settings.max_len is not None and max_len > settings.max_len:
        raise InvalidInput(
            f"max_len {max_len:,} is longer than this server's limit of {settings.max_len:,} steps (MAX_SEQUENCE_LENGTH).",
            field="params.max_len",
            expected=f"at most {settings.max_len}",
            got=max_len,
        )
    max_params = settings.max_params
    known = {key: value for key, value in overrides.items() if key != "max_len" and value is not None}
    params = replace(ArchParams(max_len=max_len), **known)
    arch.check_shape(params)
    size = param_count(arch, params)
    if max_params is not None and size > max_params:
        raise InvalidInput(
            f"'{arch.name}' with these params has {size:,} parameters; this server trains at most {max_params:,}.",
            field="params",
            expected=f"at most {max_params} parameters",
            got=size,
        )
    return params


def label_array(labels: Sequence[Any], params: ArchParams, field: str) -> np.ndarray:
    """The labels as the task trains on them, each checked: a class id below 2 (binary) or ``n_classes``
    (multiclass), or a finite target (a number, or a list of ``n_outputs`` numbers, for regression)."""
    if params.task == "regression":
        rows = [list(target) if isinstance(target, (list, tuple)) else [target] for target in labels]
        for i, row in enumerate(rows):
            if len(row) != params.n_outputs:
                raise InvalidValue(
                    f"{field}[{i}]: this model predicts {params.n_outputs} value(s) per sequence, got {len(row)}.",
                    field=f"{field}[{i}]",
                    expected=f"{params.n_outputs} number(s)",
                    got=len(row),
                )
            for j, value in enumerate(row):
                try:
                    check_number(value, f"{field}[{i}]" if params.n_outputs == 1 else f"{field}[{i}][{j}]")
                except InvalidInput as exc:
                    raise InvalidValue(exc.message, **exc.details) from None
        return np.asarray(rows, dtype=np.float32)
    n_classes = 2 if params.task == "binary" else params.n_classes
    for i, label in enumerate(labels):
        if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not 0 <= label < n_classes:
            raise InvalidValue(
                f"{field}[{i}]: a {params.task} model's labels are class ids 0 to {n_classes - 1}, got {label!r}.",
                field=f"{field}[{i}]",
                expected=f"an integer 0 <= id < {n_classes}",
                got=label,
            )
    return np.asarray(labels, dtype=np.float32 if params.task == "binary" else np.int32)


def _answers_field(params: ArchParams, prefix: str) -> str:
    return f"{prefix}.targets" if params.task == "regression" else f"{prefix}.labels"


def _input(arch: Architecture, params: ArchParams, sequences: Sequence[Sequence[Any]], **options: Any) -> np.ndarray:
    return to_model_input(
        sequences,
        input_kind=arch.input_kind,
        max_len=params.max_len,
        vocab_size=params.vocab_size,
        n_features=params.n_features,
        pad_value=np.nan if params.padding == "masked" else 0.0,
        **options,
    )


def prepare_user_data(
    sequences: Sequence[Sequence[Any]],
    labels: Sequence[Any],
    arch: Architecture,
    params: ArchParams,
    max_values: int | None = None,
) -> TrainingData:
    """Validate and pad a user's training data for ``arch`` (at most ``max_values`` values once padded)."""
    field = _answers_field(params, "data")
    if len(labels) != len(sequences):
        one = "target" if params.task == "regression" else "label"
        raise InvalidInput(f"Give one {one} per sequence.", field=field, expected=len(sequences), got=len(labels))
    check_padded_size(len(sequences), params.max_len, max_values, "data.sequences", params.n_features)
    x = _input(arch, params, sequences, field="data.sequences")
    return TrainingData(x=x, y=label_array(labels, params, field), source="request")


def _dataset_answers(y: np.ndarray, params: ArchParams) -> list[Any]:
    # The checks take what a request carries (Python numbers), not NumPy scalars.
    return y.tolist() if params.task == "regression" else y.astype(np.int64).tolist()


def prepare_dataset(raw: RawData, arch: Architecture, params: ArchParams) -> TrainingData:
    """Shape a generated built-in dataset for ``arch`` (float tasks cannot feed token models)."""
    dataset = raw.dataset
    assert dataset is not None, "only for built-in datasets"
    for name, has, asked in (("task", dataset.task, params.task), ("n_features", dataset.n_features, params.n_features)):
        if has != asked:
            raise InvalidInput(
                f"Dataset '{dataset.name}' has {name} {has}; params.{name} asks for {asked}.",
                field=f"params.{name}",
                expected=has,
                got=asked,
            )
    if dataset.input_kind != arch.input_kind:
        raise InvalidInput(
            f"Dataset '{dataset.name}' holds {dataset.input_kind} sequences; '{arch.name}' takes {arch.input_kind}.",
            field="dataset",
            expected=f"a {arch.input_kind} dataset",
            got=dataset.name,
        )
    data = _input(arch, params, np.asarray(raw.sequences).tolist(), truncate="pre", field="dataset")
    answers = label_array(_dataset_answers(np.asarray(raw.labels), params), params, _answers_field(params, "dataset"))
    return TrainingData(x=data, y=answers, source=raw.source)


def _keras_metric(name: str) -> str | keras.metrics.Metric:
    # Keras knows "accuracy" and "mae" by these names; RMSE only as a class, which names it at length.
    return keras.metrics.RootMeanSquaredError(name="rmse") if name == "rmse" else name


EpochCallback = Callable[[int, dict[str, list[float]]], None]


class _Progress(keras.callbacks.Callback):
    """Reports each epoch's metrics; stops at the next batch after a cancel or past the time cap."""

    def __init__(
        self,
        context: JobContext,
        history: dict[str, list[float]],
        on_epoch: EpochCallback,
        deadline: float | None = None,
    ) -> None:
        super().__init__()
        self._context = context
        self._history = history
        self._on_epoch = on_epoch
        self._deadline = deadline
        self.timed_out = False

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self._context.cancel_requested.is_set():
            self.model.stop_training = True
        elif self._deadline is not None and time.perf_counter() > self._deadline:
            self.timed_out = True
            self.model.stop_training = True

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        for key, values in self._history.items():
            if logs and key in logs:
                values.append(float(logs[key]))
        self._on_epoch(epoch + 1, {k: list(v) for k, v in self._history.items()})


class LengthBatches(keras.utils.PyDataset):
    """Batches of NaN-pre-padded sequences of one true length each, cut to that length, for a masked model:
    ragged data trains without a single padding step reaching the LSTM. With a ``seed`` the batches come in
    a seeded shuffled order, reshuffled every epoch."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, seed: int | None = None) -> None:
        super().__init__()
        self._x, self._y = x, y
        self._rng = None if seed is None else np.random.default_rng(seed)
        lengths = true_lengths(x)
        self._batches = [
            rows[start : start + batch_size]
            for length in np.unique(lengths)
            for rows in [np.flatnonzero(lengths == length)]
            for start in range(0, len(rows), batch_size)
        ]
        self.on_epoch_end()

    def __len__(self) -> int:
        return len(self._batches)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rows = self._batches[index]
        length = int(true_lengths(self._x[rows[:1]])[0])
        return self._x[rows, self._x.shape[1] - length :], self._y[rows]

    def on_epoch_end(self) -> None:
        if self._rng is not None:
            self._rng.shuffle(self._batches)


def split_indices(n: int, settings: FitSettings) -> tuple[np.ndarray, np.ndarray]:
    """Seeded shuffle, then the first ``validation_split`` share validates and the rest trains."""
    order = np.random.default_rng(settings.seed).permutation(n)
    n_val = int(n * settings.validation_split)
    if n - n_val < 1:
        raise InvalidInput(
            "validation_split leaves no sequence to train on.",
            field="validation_split",
            expected=f"< {1 - 1 / n:.3f}",
            got=settings.validation_split,
        )
    return order[n_val:], order[:n_val]


def fit(
    arch: Architecture,
    params: ArchParams,
    data: TrainingData,
    settings: FitSettings,
    context: JobContext,
    on_epoch: EpochCallback | None = None,
) -> FitResult:
    """Fit the whole-sequence model of ``arch`` with the task's loss (binary cross-entropy, sparse categorical
    cross-entropy or mean squared error) and Adam, seeded.

    ``on_epoch(epoch, history)`` sees progress; by default it is published as the job's own.
    """
    keras.utils.set_random_seed(settings.seed)
    train_idx, val_idx = split_indices(len(data.y), settings)
    model = build_sequence_model(arch, params)
    metrics = METRICS[params.task]
    model.compile(optimizer=keras.optimizers.Adam(), loss=LOSSES[params.task], metrics=[_keras_metric(m) for m in metrics])
    names = ("loss", *metrics)
    history: dict[str, list[float]] = {key: [] for key in (*names, *(f"val_{name}" for name in names))}
    publish = on_epoch or (lambda epoch, hist: context.update(epoch=epoch, history=hist))
    started = time.perf_counter()
    deadline = None if settings.max_seconds is None else started + settings.max_seconds
    progress = _Progress(context, history, publish, deadline)
    if params.padding == "masked":
        model.fit(
            LengthBatches(data.x[train_idx], data.y[train_idx], settings.batch_size, settings.seed),
            validation_data=LengthBatches(data.x[val_idx], data.y[val_idx], settings.batch_size) if len(val_idx) else None,
            epochs=settings.epochs,
            verbose=0,
            callbacks=[progress],
        )
    else:
        model.fit(
            data.x[train_idx],
            data.y[train_idx],
            validation_data=(data.x[val_idx], data.y[val_idx]) if len(val_idx) else None,
            epochs=settings.epochs,
            batch_size=settings.batch_size,
            verbose=0,
            callbacks=[progress],
        )
    context.check_cancelled()
    if progress.timed_out:
        raise TrainingTimeExceeded(
            f"Training stopped: it ran past the server's limit of {settings.max_seconds:g} s (MAX_TRAIN_SECONDS).",
            limit_s=settings.max_seconds,
            epochs_done=len(history["loss"]),
        )
    return FitResult(model=model, history=history, seconds=time.perf_counter() - started)


def artifact_for(arch: Architecture, params: ArchParams, model: keras.Model) -> keras.Model:
    """What gets saved: the trained model, or for ``stateful_lstm`` the seed's stateful twin."""
    if not arch.stateful:
        return model
    twin = build_stateful_model(arch, params)
    twin.set_weights(model.get_weights())
    return twin


def no_validation_note(n_sequences: int, validation_split: float) -> str:
    """What a training job says when its split held nothing out (its ``val_`` history stays empty)."""
    return (
        f"No validation: {n_sequences} sequences with validation_split {validation_split:g} leave none to hold out, "
        "so val_loss and val_accuracy stay empty and every metric is a training one; give more sequences or a "
        "larger validation_split to measure the model on data it did not fit."
    )


def train_job(
    index: ModelIndex, name: str, arch: Architecture, params: ArchParams, data: TrainingData, settings: FitSettings
) -> Work:
    """The work of a ``POST /models/{name}/train`` job: fit, then store a new version."""

    def work(context: JobContext) -> None:
        if not len(split_indices(len(data.y), settings)[1]):
            context.update(notes=[no_validation_note(len(data.y), settings.validation_split)])
        result = fit(arch, params, data, settings, context)
        meta = index.add(
            name,
            arch,
            params,
            artifact_for(arch, params, result.model),
            metrics=result.final_metrics(),
            source=data.source,
            extra={"epochs": settings.epochs, "train_seconds": round(result.seconds, 3), "seed": settings.seed},
        )
        context.update(version=meta.version)

    return work



def prepare_training(
    arch: Architecture, overrides: dict[str, int], raw: RawData, settings: FitSettings
) -> tuple[ArchParams, TrainingData]:
    """Resolve ``arch``'s params and shape the data (a built-in dataset or the caller's) for it.

    Raises ``InvalidInput`` for anything that would only fail later inside the job.
    """
    if raw.dataset is not None:
        dataset = raw.dataset
        # A built-in dataset knows its task and width: they are the defaults, the caller's params still lead.
        defaults: dict[str, Any] = {"task": dataset.task}
        if arch.input_kind == "float":
            defaults["n_features"] = dataset.n_features
        if dataset.task == "multiclass":
            defaults["n_classes"] = dataset.n_classes
        params = resolve_params(arch, {**defaults, **overrides}, dataset.max_len, settings)
        check_padded_size(dataset.n_sequences, params.max_len, settings.max_values, "params.max_len", params.n_features)
        data = prepare_dataset(raw, arch, params)
    else:
        sequences, labels = raw.sequences, raw.labels
        longest = max(range(len(sequences)), key=lambda i: len(sequences[i]))
        if "max_len" not in overrides and settings.max_len is not None and len(sequences[longest]) > settings.max_len:
            # max_len would come from this sequence: say which one is too long rather than "params.max_len".
            raise InvalidInput(
                f"Sequence {longest} has {len(sequences[longest]):,} steps; this server takes at most "
                f"{settings.max_len:,} (MAX_SEQUENCE_LENGTH).",
                field=f"data.sequences[{longest}]",
                expected=f"at most {settings.max_len} steps",
                got=len(sequences[longest]),
            )
        params = resolve_params(arch, overrides, len(sequences[longest]), settings)
        data = prepare_user_data(sequences, labels, arch, params, settings.max_values)
    split_indices(len(data.y), settings)
    return params, data


def plan_training(
    index: ModelIndex,
    name: str,
    architecture: str,
    overrides: dict[str, int],
    *,
    sequences: Sequence[Sequence[float]] | None,
    labels: Sequence[int] | None,
    dataset: str | None,
    settings: FitSettings,
) -> Work:
    """Validate a training request up front (so mistakes are a 4xx, not a failed job) and return its work."""
    arch = get_architecture(architecture)
    raw = RawData.load(sequences=sequences, labels=labels, dataset=dataset, seed=settings.seed)
    params, data = prepare_training(arch, overrides, raw, settings)
    return train_job(index, name, arch, params, data, settings)
