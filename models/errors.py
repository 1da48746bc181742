"""Domain errors. They carry no HTTP knowledge: ``service.errors`` maps each class to a status code."""

import errno
import os
from typing import Any


class LstmServeError(Exception):
    """Base class: a machine-readable ``code``, a human sentence and structured ``details``."""

    code = "error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidInput(LstmServeError, ValueError):
    """The caller sent something well-formed JSON but wrong for this model or route."""

    code = "invalid_input"


class InvalidValue(InvalidInput):
    """A value whose form depends on the model: a step of the wrong width, a class id out of range, a
    regression target that is not a finite number.

    Its code is the one the request schema gives any other malformed value: these checks moved from the
    schema to the model (which alone knows its width and task), and a binary one-feature model's label 2 or
    step ``[0.1]`` is refused with the same code and field as before."""

    code = "validation_error"


class InvalidModelFile(InvalidInput):
    """An uploaded file is not a readable Keras 3 model, or not the declared architecture."""

    code = "invalid_model_file"


class ModelNotBuilt(InvalidModelFile):
    """An uploaded model was saved before it was built (no input shape), so the file holds no weights."""

    code = "model_not_built"


class UnsafeModel(InvalidInput):
    """An uploaded model would need arbitrary code to deserialize (e.g. a Lambda layer)."""

    code = "unsafe_model"


class NotFound(LstmServeError, LookupError):
    """Base for unknown resources."""

    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class VersionNotFound(NotFound):
    code = "version_not_found"


class ModelDeleted(NotFound):
    """A session's model was deleted since the session started (a new model may have the same name)."""

    code = "model_deleted"


class JobNotFound(NotFound):
    code = "job_not_found"


class SessionNotFound(NotFound):
    code = "session_not_found"


class DatasetNotFound(InvalidInput):
    code = "dataset_not_found"


class Conflict(LstmServeError):
    """The request is valid but clashes with the resource's current state."""

    code = "conflict"


class SessionsUnsupported(Conflict):
    code = "sessions_unsupported"


class SessionBusy(Conflict):
    """The session stayed locked by another step past the lock wait, or this step lost its lock (and wrote nothing)."""

    code = "session_busy"


class StepOutOfOrder(Conflict):
    """A step's ``seq`` is neither the session's next step nor a repeat of its last applied one."""

    code = "step_out_of_order"


class StateMismatch(Conflict):
    """A session state (a snapshot, or the session to fork) belongs to another model, incarnation or version."""

    code = "state_mismatch"


class JobNotCancellable(Conflict):
    code = "job_not_cancellable"


class ReportNotReady(Conflict):
    code = "report_not_ready"


class CapacityExceeded(LstmServeError):
    """A configured limit (live sessions, queued jobs) is reached; retry later."""

    code = "capacity_exceeded"


class Unavailable(LstmServeError):
    """Base for a dependency that cannot answer now; the same request may succeed when retried."""

    code = "unavailable"


class StateStoreUnavailable(Unavailable):
    """The session store did not answer within its deadline; nothing was changed."""

    code = "state_store_unavailable"


class StateUnknown(Unavailable):
    """A session's new state was sent to the store but its outcome is unknown: it may or may not be applied."""

    code = "state_unknown"


class InsufficientStorage(LstmServeError):
    """Writing to disk failed (no space left, or another I/O error); nothing half-written was kept."""

    code = "insufficient_storage"

    @classmethod
    def from_os_error(cls, fault: OSError) -> "InsufficientStorage":
        """The error for a failed write, naming the operating system's reason (``ENOSPC``, ``EIO``...)."""
        reason = os.strerror(fault.errno) if fault.errno else str(fault)
        return cls(
            f"The server could not write to its storage ({reason}); nothing was kept. Retry once space is freed.",
            errno=errno.errorcode.get(fault.errno) if fault.errno else None,
        )


def storage_fault(exc: BaseException) -> OSError | None:
    """The ``OSError`` behind ``exc`` (itself, or what it was raised from), if a disk operation caused it.

    Libraries that write files (h5py, the ONNX export) sometimes wrap the operating system's error in
    their own exception; the cause chain still holds it.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


class TrainingTimeExceeded(LstmServeError):
    """A training job ran past the server's time cap (``MAX_TRAIN_SECONDS``); it was stopped."""

    code = "training_time_exceeded"
