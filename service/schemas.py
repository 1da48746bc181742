"""Pydantic models for every request and response body, named for their role."""

from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from models.architectures import ARCHITECTURES, Padding
from models.tasks import Task
from models.errors import InvalidInput
from models.inputs import FLOAT32_MAX
from models.training.comparison_report import ComparisonReport
from models.training.fitting import FitSettings
from service.config import Settings

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"

ArchitectureName = Literal["lstm", "stateful_lstm", "td_dense_lstm", "embedding_lstm", "embedding_bilstm"]
assert set(ArchitectureName.__args__) == set(ARCHITECTURES), "schema and registry must list the same names"

#: ``models.inputs.check_number``'s rule as pydantic constraints: a JSON number that is finite in float32;
#: strings and booleans are refused rather than coerced. Constraints, not a call to ``check_number`` per
#: value, because they run inside pydantic-core, on the predict fast path; tests/test_hostile.py checks
#: that both refuse the same numbers.
FiniteNumber = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=-FLOAT32_MAX, le=FLOAT32_MAX)]
#: A class id: 0/1 for a binary model, below ``n_classes`` for a multiclass one (that bound is checked
#: against the task in ``models.training.fitting.label_array``).
Label = Annotated[int, Field(strict=True, ge=0)]
#: One time step: a number (one feature, the question's form) or a list of ``n_features`` numbers.
Step = FiniteNumber | list[FiniteNumber]
#: A regression target has the same form: one number, or a list of ``n_outputs`` numbers.
Target = Step
Sequences = Annotated[list[list[Step]], Field(min_length=1)]


class RequestModel(BaseModel):
    """Request bodies refuse unknown fields and never coerce types (``"5"`` is not a number of epochs), so a
    mistake is an error rather than silently ignored or reinterpreted."""

    model_config = ConfigDict(extra="forbid", strict=True)


class ErrorBody(BaseModel):
    code: str = Field(examples=["model_not_found"])
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorResponse(BaseModel):
    error: ErrorBody


class ArchitecturePublic(BaseModel):
    name: ArchitectureName
    input_kind: Literal["float", "tokens"]
    stateful: bool
    supports_sessions: bool
    summary: str
    when_to_use: str
    default_params: dict[str, int]


class DatasetPublic(BaseModel):
    name: str
    input_kind: Literal["float", "tokens"]
    description: str
    n_sequences: int
    max_len: int
    vocab_size: int | None
    task: Literal["binary", "multiclass", "regression"] = Field(description="What the labels are")
    n_features: int = Field(description="Values per step (1: a number per step; more: a list per step)")
    n_classes: int | None = Field(description="Distinct labels of a classification task; null for regression")


class ParamsIn(RequestModel):
    """Hyper-parameters; omitted ones take the defaults, ``max_len`` the longest training sequence."""

    max_len: int | None = Field(None, ge=1, description="At most MAX_SEQUENCE_LENGTH")
    units: int | None = Field(None, ge=1, le=1024)
    vocab_size: int | None = Field(None, ge=2, le=1_000_000)
    embedding_dim: int | None = Field(None, ge=1, le=1024)
    dense_units: int | None = Field(None, ge=1, le=1024)
    n_features: int | None = Field(None, ge=1, le=1024, description="Numbers per step (float architectures); default 1")
    task: Task | None = Field(None, description="binary (default), multiclass or regression")
    n_classes: int | None = Field(None, ge=2, le=1024, description="Classes of a multiclass head; default 2")
    n_outputs: int | None = Field(None, ge=1, le=1024, description="Values a regression head predicts; default 1")
    padding: Padding | None = Field(
        None, description="pre (default): zeros before short sequences; masked: the model reads only a sequence's own steps"
    )


class TrainingDataIn(RequestModel):
    """Sequences with ``labels`` (binary and multiclass: class ids) or ``targets`` (regression)."""

    sequences: Annotated[list[list[Step]], Field(min_length=2)]
    labels: Annotated[list[Label], Field(min_length=2)] | None = None
    targets: Annotated[list[Target], Field(min_length=2)] | None = None

    @model_validator(mode="after")
    def _labels_or_targets(self) -> "TrainingDataIn":
        if (self.labels is None) == (self.targets is None):
            raise ValueError("give exactly one of 'labels' (class ids) and 'targets' (regression values)")
        return self


class FitOptions(RequestModel):
    """Where the data comes from and how to fit; shared by training and comparisons."""

    data: TrainingDataIn | None = None
    dataset: str | None = Field(None, examples=["noisy_trend"])
    params: ParamsIn = Field(default_factory=ParamsIn)
    epochs: int = Field(5, ge=1)
    batch_size: int = Field(32, ge=1, le=4096)
    validation_split: float = Field(0.2, ge=0.0, lt=1.0)
    seed: int = Field(0, ge=0, le=2**31 - 1)

    @model_validator(mode="after")
    def _one_data_source(self) -> "FitOptions":
        if (self.data is None) == (self.dataset is None):
            raise ValueError("give exactly one of 'data' and 'dataset'")
        return self

    def answers(self) -> list[int] | list[float | list[float]] | None:
        """What the model learns to answer from ``data``: its labels (class ids), or its targets for a
        regression model; ``None`` with a built-in dataset."""
        if self.data is None:
            return None
        regression = self.params.task == "regression"
        if regression != (self.data.targets is not None):
            given, wanted = ("labels", "targets") if regression else ("targets", "labels")
            raise InvalidInput(
                f"A {self.params.task or 'binary'} model learns data.{wanted}, not data.{given}.",
                field=f"data.{wanted}",
                expected=f"data.{wanted}",
                got=f"data.{given}",
            )
        return self.data.targets if regression else self.data.labels  # type: ignore[return-value]

    def fit_settings(self, limits: Settings) -> FitSettings:
        """The domain's fit settings with the server's caps (``MAX_EPOCHS``, ``MAX_TRAIN_SECONDS``,
        ``MAX_MODEL_PARAMS``, ``MAX_SEQUENCE_LENGTH``, ``MAX_PADDED_VALUES``)."""
        max_epochs = limits.max_epochs
        if self.epochs > max_epochs:
            raise InvalidInput(
                f"At most {max_epochs} epochs per job.", field="epochs", expected=f"<= {max_epochs}", got=self.epochs
            )
        return FitSettings(
            self.epochs,
            self.batch_size,
            self.validation_split,
            self.seed,
            max_seconds=limits.max_train_seconds,
            max_params=limits.max_model_params,
            max_len=limits.max_sequence_length,
            max_values=limits.max_padded_values,
        )


class TrainRequest(FitOptions):
    architecture: ArchitectureName = "lstm"


class CompareRequest(FitOptions):
    architectures: Annotated[list[ArchitectureName], Field(min_length=1, max_length=5)] | None = Field(
        None, description="Default: every architecture that can take the data"
    )
    keep_best_as: Annotated[str, Field(pattern=NAME_PATTERN)] | None = Field(
        None, description="Store the winner as a served model under this name"
    )


class JobAccepted(BaseModel):
    job_id: str
    model: str | None
    status: str


class JobPublic(BaseModel):
    job_id: str
    kind: str
    model: str | None
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    epoch: int
    epochs: int
    history: dict[str, list[float]]
    version: int | None
    error: dict[str, Any] | None
    report: ComparisonReport | None = Field(None, description="A comparison's result (compare jobs only)")
    created_at: str
    started_at: str | None
    finished_at: str | None
    owner: str = ""
    notes: list[str] = Field(
        default_factory=list, description="What the result must be read with, e.g. that nothing was held out to validate"
    )


_REPORT = TypeAdapter(ComparisonReport)


def comparison_report(raw: dict[str, Any]) -> ComparisonReport:
    """A comparison's report as its type: job records keep it as JSON (on disk and in Redis)."""
    return _REPORT.validate_python(raw)


class ModelPublic(BaseModel):
    name: str
    architecture: ArchitectureName
    params: dict[str, int]
    version: int
    versions: list[int]
    input_kind: Literal["float", "tokens"]
    max_len: int
    # The shape beyond the question's models appears only where it differs from theirs (binary, one feature
    # per step, pre-padding), so a binary model's description is what it always was.
    task: Task = Field("binary", exclude_if=lambda v: v == "binary", description="Absent: binary")
    n_features: int = Field(1, exclude_if=lambda v: v == 1, description="Absent: 1")
    n_classes: int | None = Field(None, exclude_if=lambda v: v is None, description="multiclass models only")
    n_outputs: int | None = Field(None, exclude_if=lambda v: v is None, description="regression models only")
    padding: Padding = Field("pre", exclude_if=lambda v: v == "pre", description="Absent: pre")
    metrics: dict[str, float]
    created_at: str
    source: str
    backend: str | None = None


class PredictRequest(RequestModel):
    sequences: Sequences = Field(examples=[[[0.1, 0.5, -0.2], [0.3]]])
    version: int | None = Field(None, ge=1)
    truncate: Literal["pre", "post"] | None = None


class Prediction(BaseModel):
    """A binary model's answer for one sequence (the question's form)."""

    probability: float
    label: Literal[0, 1]


class ClassPrediction(BaseModel):
    """A multiclass model's answer for one sequence: each class's probability and the likeliest class."""

    probabilities: list[float]
    label: int


class ValuesPrediction(BaseModel):
    """A regression model's answer for one sequence: its ``n_outputs`` values."""

    values: list[float]


def predictions_of(task: str, outputs: np.ndarray) -> list[Prediction] | list[ClassPrediction] | list[ValuesPrediction]:
    """One prediction per row of a model's outputs ``(n, output_width)``, in the task's form."""
    # One tolist() per array: converting NumPy scalars one by one cost more than building the answers.
    if task == "multiclass":
        return [
            ClassPrediction(probabilities=row, label=label)
            for row, label in zip(outputs.tolist(), outputs.argmax(axis=1).tolist(), strict=True)
        ]
    if task == "regression":
        return [ValuesPrediction(values=row) for row in outputs.tolist()]
    # The binary label is probability >= 0.5, as the question's models always answered.
    return [Prediction(probability=p, label=int(p >= 0.5)) for p in outputs.reshape(-1).tolist()]


class PredictResponse(BaseModel):
    model: str
    version: int
    predictions: list[Prediction] | list[ClassPrediction] | list[ValuesPrediction]

    @classmethod
    def of(cls, model: str, version: int, task: str, outputs: np.ndarray) -> "PredictResponse":
        """The response for a model's outputs ``(n, output_width)``, one prediction per sequence."""
        return cls(model=model, version=version, predictions=predictions_of(task, outputs))


class HealthStatus(BaseModel):
    status: Literal["ok", "loading", "jobs_unavailable"]


#: The ``format`` of a session state snapshot; another layout would get another name.
SESSION_STATE_FORMAT = "lstm-serve.session-state.v1"
StateMatrix = Annotated[list[Annotated[list[FiniteNumber], Field(min_length=1)]], Field(min_length=1, max_length=1)]


class SessionState(RequestModel):
    """A session's portable state: the model incarnation and version it runs on, how far it got, and its LSTM
    state (``h``, ``c``: one row of ``units`` float32 values each, exact as JSON numbers)."""

    format: Literal["lstm-serve.session-state.v1"] = Field(description="This layout's name and version")
    model: str
    incarnation: str = Field(description="Which model of that name (a new one after a delete)")
    version: int = Field(ge=1)
    steps_seen: int = Field(ge=0)
    h: StateMatrix = Field(description="Hidden state, shape [1, units]")
    c: StateMatrix = Field(description="Cell state, shape [1, units]")


class SessionCreate(RequestModel):
    ttl_s: int | None = Field(None, ge=1, le=7 * 24 * 3600, description="Idle seconds before expiry")
    version: int | None = Field(None, ge=1, description="Model version to pin (default: latest)")
    fork_of: str | None = Field(
        None, min_length=1, max_length=64, description="Start at this live session's current state (it is untouched)"
    )
    state: SessionState | None = Field(None, description="Start at this snapshot (from GET /sessions/{id}/state)")

    @model_validator(mode="after")
    def _one_start(self) -> "SessionCreate":
        given = [name for name in ("version", "fork_of", "state") if getattr(self, name) is not None]
        if len(given) > 1:
            raise ValueError(f"give at most one of 'version', 'fork_of' and 'state' (got {', '.join(given)})")
        return self


class SessionPublic(BaseModel):
    session_id: str
    model: str
    version: int
    steps_seen: int
    ttl_s: int
    expires_at: str


class StepRequest(RequestModel):
    values: Annotated[list[Step], Field(min_length=1, max_length=100_000)] = Field(examples=[[0.1, 0.4]])
    seq: int | None = Field(
        None,
        ge=0,
        description="Steps the session had seen before these values (the first step is 0). With it a retried "
        "step is applied exactly once: the next seq applies, a repeat of the last applied step (same seq, same "
        "values) answers it again, anything else is 409 step_out_of_order.",
    )


class StepResponse(BaseModel):
    """A binary model's step: the probability after each value, and the last one (the question's form)."""

    session_id: str
    steps_seen: int
    probabilities: list[float]
    probability: float


class OutputsStepResponse(BaseModel):
    """A multiclass or regression model's step: the prediction after each value, and the last one."""

    session_id: str
    steps_seen: int
    predictions: list[ClassPrediction] | list[ValuesPrediction]
    prediction: ClassPrediction | ValuesPrediction


def step_response(session_id: str, steps_seen: int, task: str, outputs: np.ndarray) -> StepResponse | OutputsStepResponse:
    """The response after a step whose values answered ``outputs`` (``(steps, output_width)``)."""
    if task == "binary":
        probabilities = outputs.reshape(-1).tolist()
        return StepResponse(session_id=session_id, steps_seen=steps_seen, probabilities=probabilities, probability=probabilities[-1])
    predictions = predictions_of(task, outputs)
    return OutputsStepResponse(session_id=session_id, steps_seen=steps_seen, predictions=predictions, prediction=predictions[-1])
