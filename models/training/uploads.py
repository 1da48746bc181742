"""Importing a user's ``.keras`` file as a new version, without ever running code it carries."""

import tempfile
from pathlib import Path

import keras
import numpy as np

from models.architectures import Architecture, build_sequence_model
from models.errors import InsufficientStorage, InvalidModelFile, UnsafeModel
from models.serving.engines import PARITY_TOLERANCE, random_inputs
from models.serving.servable import ModelMeta
from models.serving.model_index import ModelIndex
from models.training.fitting import artifact_for
from models.training.upload_inspection import UploadLimits, inspect_upload


def _read_keras(content: bytes) -> keras.Model:
    with tempfile.TemporaryDirectory(prefix="lstm-serve-upload-") as tmp:
        path = Path(tmp) / "upload.keras"
        path.write_bytes(content)
        try:
            # safe_mode stays on: a Lambda layer's Python code is refused, never deserialized or run.
            return keras.models.load_model(path, safe_mode=True, compile=False)
        except Exception as exc:  # noqa: BLE001 - any failure to read the file is the uploader's problem
            message = str(exc)
            if "safe_mode" in message or "Lambda" in message:
                raise UnsafeModel(
                    "The model holds code (e.g. a Lambda layer) that would run when loaded; it was refused.",
                    field="file",
                    got=message[:300],
                ) from None
            raise InvalidModelFile(
                "The file could not be read as a Keras 3 model.", field="file", got=f"{type(exc).__name__}: {message[:300]}"
            ) from None


def _uploaded_output(model: keras.Model, arch: Architecture, inputs: np.ndarray) -> np.ndarray:
    """The uploaded model's own prediction on ``inputs``; a stateful one is fed step by step."""
    if not arch.stateful:
        return np.asarray(model(inputs, training=False))
    outputs = []
    for sequence in inputs:
        for layer in model.layers:
            if getattr(layer, "stateful", False):
                layer.reset_state()
        for step in sequence:  # (max_len, n_features): one row of features per call
            last = model(step.reshape(1, 1, -1).astype(np.float32), training=False)
        outputs.append(np.asarray(last)[0])
    return np.stack(outputs)


def import_model(
    index: ModelIndex, name: str, content: bytes, declared: str | None, max_len: int | None, limits: UploadLimits
) -> ModelMeta:
    """Inspect, read and verify an uploaded model, then store it as the next version of ``name``.

    ``inspect_upload`` identifies the architecture from the file's config and refuses anything else or
    anything too large before Keras reads it. The weights are then moved into the service's own build of
    the architecture, which must reproduce the upload's predictions: whatever the inspection could not
    see still fails here instead of being served wrongly.
    """
    arch, params = inspect_upload(content, declared, max_len, limits)
    uploaded = _read_keras(content)
    canonical = build_sequence_model(arch, params)
    try:
        canonical.set_weights(uploaded.get_weights())
    except ValueError as exc:
        raise InvalidModelFile(f"The weights do not fit a '{arch.name}' model: {exc}", field="file") from None
    inputs = random_inputs(canonical, 3 if arch.stateful else 8, params.vocab_size, seed=1)[0]
    difference = float(np.max(np.abs(_uploaded_output(uploaded, arch, inputs) - np.asarray(canonical(inputs)))))
    if difference > PARITY_TOLERANCE:
        raise InvalidModelFile(
            f"The model computes differently from a standard '{arch.name}' (difference {difference:.2e}); "
            "it uses layer options this service does not serve.",
            field="file",
            expected=f"difference <= {PARITY_TOLERANCE}",
            got=difference,
        )
    try:
        return index.add(name, arch, params, artifact_for(arch, params, canonical), metrics={}, source="upload")
    except OSError as exc:
        raise InsufficientStorage.from_os_error(exc) from exc

