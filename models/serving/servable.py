"""A model version ready to serve: its metadata and its engines, built from a version folder.

A version folder holds ``model.keras`` (the artifact: for ``stateful_lstm`` the seed's stateful
(1, 1, 1) model), ``meta.json``, and the engines' caches ``predict.onnx`` and ``step.onnx``.
"""

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from models.architectures import (
    Architecture,
    ArchParams,
    build_sequence_model,
    build_step_model,
    get_architecture,
)
from models.inputs import Truncate, to_model_input, true_lengths
from models.serving.engines import Engine, OnnxEngine, export_engine

log = logging.getLogger(__name__)

ARTIFACT = "model.keras"
META = "meta.json"
PREDICT_ENGINE = "predict.onnx"
STEP_ENGINE = "step.onnx"


@dataclass
class ModelMeta:
    """What the index knows about one version; written as ``meta.json`` beside the artifact."""

    name: str
    architecture: str
    params: dict[str, int]
    version: int
    input_kind: str
    max_len: int
    created_at: str
    source: str
    metrics: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    #: Which life of the model this version belongs to: new whenever the model is created from nothing
    #: (its first version, or the first after a delete), kept by every later version.
    incarnation: str = ""
    #: The model's shape beyond ``params`` (older ``meta.json`` files lack these: the question's defaults).
    task: str = "binary"
    n_features: int = 1
    n_classes: int | None = None
    n_outputs: int | None = None
    padding: str = "pre"

    @staticmethod
    def shape_of(params: ArchParams) -> dict[str, Any]:
        """The fields that record ``params`` beyond ``relevant_params``, for a new version's metadata."""
        return {
            "task": params.task,
            "n_features": params.n_features,
            "n_classes": params.n_classes if params.task == "multiclass" else None,
            "n_outputs": params.n_outputs if params.task == "regression" else None,
            "padding": params.padding,
        }

    def arch_params(self) -> ArchParams:
        """The full hyper-parameters this version was built with."""
        shape: dict[str, Any] = {"task": self.task, "n_features": self.n_features, "padding": self.padding}
        if self.n_classes is not None:
            shape["n_classes"] = self.n_classes
        if self.n_outputs is not None:
            shape["n_outputs"] = self.n_outputs
        return ArchParams(**self.params, **shape)

    def to_json(self) -> str:
        """Serialized form for ``meta.json``."""
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def read(cls, path: Path) -> "ModelMeta":
        """Parse a ``meta.json``."""
        return cls(**json.loads(path.read_text()))


class Servable:
    """One loaded version: pads and validates inputs, runs the whole-sequence and the step engines."""

    def __init__(self, meta: ModelMeta, predict_engine: Engine, step_engine: Engine | None) -> None:
        self.meta = meta
        self.architecture: Architecture = get_architecture(meta.architecture)
        self.params = meta.arch_params()
        self.predict_engine = predict_engine
        self.step_engine = step_engine
        self._warm_up()

    @property
    def backend(self) -> str:
        """Which runtime serves ``/predict`` for this version."""
        return self.predict_engine.backend

    def to_input(self, sequences: Sequence[Sequence[float]], truncate: Truncate | None) -> np.ndarray:
        """Validate, pad and truncate request sequences for this model."""
        return to_model_input(
            sequences,
            input_kind=self.architecture.input_kind,
            max_len=self.params.max_len,
            vocab_size=self.params.vocab_size,
            truncate=truncate,
            n_features=self.params.n_features,
            pad_value=np.nan if self.params.padding == "masked" else 0.0,
        )

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """The head's outputs, ``(n, output_width)``, for a batch from ``to_input``.

        A masked model runs each group of equally long sequences over their own steps only: its engine has
        no fixed time axis, so no padding step ever reaches the LSTM (one engine call per distinct length).
        """
        if self.params.padding != "masked":
            return self.predict_engine.run(batch)[0]
        lengths = true_lengths(batch)
        outputs = np.empty((len(batch), self.params.output_width), np.float32)
        for length in np.unique(lengths):
            rows = np.flatnonzero(lengths == length)
            outputs[rows] = self.predict_engine.run(batch[rows, batch.shape[1] - length :])[0]
        return outputs

    def zero_state(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The LSTM state a session starts from: ``(h, c)``, each ``(n, units)`` zeros."""
        shape = (n, self.params.units)
        return np.zeros(shape, np.float32), np.zeros(shape, np.float32)

    def step(self, x_t: np.ndarray, h: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One timestep for ``n`` sessions at once: ``x_t`` is ``(n,)`` token ids or ``(n, n_features)``
        floats; returns ``(outputs (n, output_width), h', c')``."""
        assert self.step_engine is not None, "callers check architecture.supports_sessions"
        shaped = x_t.reshape(-1, 1) if self.architecture.input_kind == "tokens" else x_t.reshape(-1, 1, self.params.n_features)
        return tuple(self.step_engine.run(shaped, h, c))  # type: ignore[return-value]

    def _warm_up(self) -> None:
        # The first run of an engine allocates and plans; pay that at load, not on a user's request.
        step = 0.0 if self.params.n_features == 1 else [0.0] * self.params.n_features
        self.predict(self.to_input([[step] * self.params.max_len], None))
        if self.step_engine is not None:
            self.step(np.zeros((1, self.params.n_features), np.float32), *self.zero_state(1))


def _export_engines(folder: Path, arch: Architecture, params: ArchParams, weights: list[np.ndarray]) -> tuple[Engine, Engine | None]:
    """Build the whole-sequence and step models on ``weights`` and export both into ``folder``."""
    sequence_model = build_sequence_model(arch, params)
    sequence_model.set_weights(weights)
    predict_engine = export_engine(sequence_model, folder / PREDICT_ENGINE, params.vocab_size)
    if not arch.supports_sessions:
        return predict_engine, None
    step_model = build_step_model(arch, params)
    step_model.set_weights(weights)
    return predict_engine, export_engine(step_model, folder / STEP_ENGINE, params.vocab_size)


def write_version(folder: Path, meta: ModelMeta, artifact: keras.Model) -> None:
    """Write a complete version into ``folder`` (a fresh temporary folder); ``meta.extra`` gains its backend.

    Nothing is loaded for serving here: the registry loads the version when it is first asked for.
    """
    artifact.save(folder / ARTIFACT)
    engines = _export_engines(folder, get_architecture(meta.architecture), meta.arch_params(), artifact.get_weights())
    meta.extra = {**meta.extra, "backend": engines[0].backend}
    (folder / META).write_text(meta.to_json())


def read_version(folder: Path) -> Servable:
    """Load a committed version folder, from its ONNX caches when present, else from the artifact."""
    meta = ModelMeta.read(folder / META)
    arch = get_architecture(meta.architecture)
    step_cached = not arch.supports_sessions or (folder / STEP_ENGINE).exists()
    if (folder / PREDICT_ENGINE).exists() and step_cached:
        step_engine = OnnxEngine(folder / STEP_ENGINE) if arch.supports_sessions else None
        return Servable(meta, OnnxEngine(folder / PREDICT_ENGINE), step_engine)
    log.info("No ONNX cache for %s v%d; building engines from the artifact", meta.name, meta.version)
    artifact = keras.models.load_model(folder / ARTIFACT, safe_mode=True, compile=False)
    return Servable(meta, *_export_engines(folder, arch, meta.arch_params(), artifact.get_weights()))
