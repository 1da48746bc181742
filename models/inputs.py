"""Turning request sequences into model input arrays, with the contract's padding rules.

Shorter sequences are pre-padded with 0 (as ``keras.utils.pad_sequences`` does); longer ones are an
error unless the caller asks to truncate. Token ids must be whole numbers within the vocabulary.
Every error names the offending field, what was expected and what was sent.

Numbers follow one rule on every route (native, TF Serving, KServe): a JSON number, not a boolean,
finite and within float32's range, since anything larger would silently become infinity inside the
model. Array sizes are computed and checked against the server's cap before anything is allocated.
"""

import json
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np

from models.architectures import InputKind
from models.errors import InvalidInput, InvalidValue

Truncate = Literal["pre", "post"]

#: Largest magnitude a float32 holds: anything beyond would silently become infinity inside the model.
FLOAT32_MAX = float(np.finfo(np.float32).max)
NUMBER_EXPECTED = f"a finite number within float32 range (|x| <= {FLOAT32_MAX:.7g})"

#: What pads a masked token model's batch: no token id is negative, and the engine never reads it
#: (``true_lengths`` cuts each sequence to its own steps).
PAD_TOKEN = -1


def check_number(value: Any, field: str) -> float:
    """The rule for one number sent by a client: a real number (not a boolean), finite, within float32.
    Returns it as sent (an integer stays an integer, for token ids).

    Integers are compared before conversion, so one with 400 digits is refused rather than overflowing.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput(f"{field}: expected a number, got {describe(value)}.", field=field, expected="a number", got=value)
    if isinstance(value, int):
        fits = -FLOAT32_MAX <= value <= FLOAT32_MAX
    else:
        fits = math.isfinite(value) and abs(value) <= FLOAT32_MAX
    if not fits:
        raise InvalidInput(f"{field}: expected {NUMBER_EXPECTED}, got {describe(value)}.", field=field, expected=NUMBER_EXPECTED, got=describe(value))
    return value


def describe(value: Any) -> str:
    """A short rendering of what the client sent, for error messages (never a whole payload or 400 digits)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value).replace("nan", "NaN").replace("inf", "Infinity")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**30:
        return f"an integer of {len(str(abs(value)))} digits"
    if isinstance(value, list) and len(value) > 4:
        return f"a list of {len(value)} items"
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:60] + "…"


def check_padded_size(n_sequences: int, max_len: int, max_values: int | None, field: str, n_features: int = 1) -> None:
    """Refuse a batch whose padded array (``n_sequences`` x ``max_len`` x ``n_features``) would exceed
    ``max_values``.

    Called before anything is allocated: a ragged body of a few megabytes can otherwise ask for an
    array of hundreds of gigabytes (one long sequence sets the padded length of all the others).
    """
    size = n_sequences * max_len * n_features
    if max_values is not None and size > max_values:
        steps = f"{max_len} steps" if n_features == 1 else f"{max_len} steps of {n_features} features"
        raise InvalidInput(
            f"{n_sequences} sequences padded to {steps} are {size:,} values; "
            f"this server takes at most {max_values:,} (MAX_PADDED_VALUES).",
            field=field,
            expected=f"at most {max_values} values after padding",
            got=size,
        )


def _check_tokens(
    values: np.ndarray, vocab_size: int, locate: Callable[[int], str], padding: np.ndarray | None = None
) -> np.ndarray:
    """Validate token ids held as floats; return them as int32. ``locate`` names a flat index; where ``padding``
    is true (a masked model's padding, not a value sent) nothing is checked and ``PAD_TOKEN`` is written."""
    if padding is not None:
        values = np.where(padding, 0.0, values)
    bad_whole = np.flatnonzero(values != np.floor(values))
    if bad_whole.size:
        index = int(bad_whole[0])
        raise InvalidInput(
            "Token ids must be whole numbers.",
            field=locate(index),
            expected="an integer token id",
            got=float(values.flat[index]),
        )
    bad_range = np.flatnonzero((values < 0) | (values >= vocab_size))
    if bad_range.size:
        index = int(bad_range[0])
        raise InvalidInput(
            f"Token id out of range for a vocabulary of {vocab_size}.",
            field=locate(index),
            expected=f"0 <= id < {vocab_size}",
            got=float(values.flat[index]),
        )
    tokens = values.astype(np.int32)
    if padding is not None:
        tokens[padding] = PAD_TOKEN
    return tokens


def _steps(seq: Sequence[Any], n_features: int, field: str, first: int = 0) -> np.ndarray:
    """One sequence as ``(steps, n_features)`` floats: each step a number when ``n_features`` is 1, else a
    list of ``n_features`` numbers. A wrong step is named by its index in what was sent (``seq`` starts at
    step ``first`` of it, after a ``truncate="pre"``)."""
    try:
        array = np.asarray(seq, dtype=np.float64)
    except (ValueError, TypeError):
        array = None  # ragged or mixed steps: found below
    if array is not None and array.shape == ((len(seq),) if n_features == 1 else (len(seq), n_features)):
        return array.reshape(len(seq), n_features)
    expected = "a number" if n_features == 1 else f"a list of {n_features} numbers"
    for j, step in enumerate(seq):
        width = len(step) if isinstance(step, (list, tuple)) else None
        if (n_features == 1 and width is not None) or (n_features > 1 and width != n_features):
            got = f"a list of {width}" if width is not None else describe(step)
            raise InvalidValue(
                f"{field}[{first + j}]: each step of this model is {expected} (n_features={n_features}), got {got}.",
                field=f"{field}[{first + j}]",
                expected=expected,
                got=width if width is not None else step,
            )
    raise InvalidValue(f"{field}: each step is {expected}.", field=field, expected=expected, got=describe(list(seq)))


def to_model_input(
    sequences: Sequence[Sequence[Any]],
    *,
    input_kind: InputKind,
    max_len: int,
    vocab_size: int,
    truncate: Truncate | None = None,
    field: str = "sequences",
    n_features: int = 1,
    pad_value: float = 0.0,
) -> np.ndarray:
    """Pad, truncate and validate a batch: float ``(n, max_len, n_features)`` or int32 ``(n, max_len)``.

    Short sequences are pre-padded with ``pad_value``: 0 as ``pad_sequences`` does, or NaN for a masked
    model (``PAD_TOKEN`` in a batch of token ids), whose engine then runs each sequence over its own steps only
    (``true_lengths``).
    """
    if len(sequences) == 0:
        raise InvalidInput("Send at least one sequence.", field=field, expected="a non-empty list", got=[])
    shape = (len(sequences), max_len, n_features)
    batch = np.zeros(shape, np.float64) if pad_value == 0 else np.full(shape, pad_value, np.float64)
    lengths = np.empty(len(sequences), dtype=np.int64)
    cut = np.zeros(len(sequences), dtype=np.int64)  # steps dropped from the front by truncate="pre"
    for i, seq in enumerate(sequences):
        n = len(seq)
        if n == 0:
            raise InvalidInput("Sequences must not be empty.", field=f"{field}[{i}]", expected="at least 1 step", got=0)
        if n > max_len:
            if truncate is None:
                raise InvalidInput(
                    f"Sequence {i} has {n} steps; the model takes at most {max_len}. "
                    "Send \"truncate\": \"pre\" or \"post\" to cut it.",
                    field=f"{field}[{i}]",
                    expected=f"at most {max_len} steps",
                    got=n,
                )
            if truncate == "pre":
                seq, cut[i] = seq[n - max_len :], n - max_len
            else:
                seq = seq[:max_len]
            n = max_len
        if n_features == 1:
            # NumPy's own copy from the list is the fast path (a nested or mixed step cannot broadcast into
            # the one-feature slot and raises); only a refused sequence is walked, to name its step.
            try:
                batch[i, max_len - n :, 0] = seq
            except (ValueError, TypeError):
                batch[i, max_len - n :] = _steps(seq, n_features, f"{field}[{i}]", int(cut[i]))
        else:
            # Checked before the copy: a step of one number would broadcast silently across the features.
            batch[i, max_len - n :] = _steps(seq, n_features, f"{field}[{i}]", int(cut[i]))
        lengths[i] = n
    if input_kind == "float":
        return batch.astype(np.float32)
    tokens = batch[:, :, 0]

    def locate(flat: int) -> str:
        row, col = divmod(flat, max_len)
        return f"{field}[{row}][{col - (max_len - int(lengths[row])) + int(cut[row])}]"

    # The padding is known from the lengths, not from the values: a NaN sent as a token id stays an error.
    padding = None if pad_value == 0 else np.arange(max_len)[None, :] < (max_len - lengths)[:, None]
    return _check_tokens(tokens, vocab_size, locate, padding)


def true_lengths(batch: np.ndarray) -> np.ndarray:
    """Steps of each masked model's pre-padded sequence: NaN-padded floats ``(n, max_len, n_features)`` or
    ``PAD_TOKEN``-padded token ids ``(n, max_len)``; its non-padding steps."""
    if batch.ndim == 2:
        return batch.shape[1] - np.argmax(batch != PAD_TOKEN, axis=1)
    return batch.shape[1] - np.argmax(~np.isnan(batch[:, :, 0]), axis=1)


def to_step_input(values: Sequence[Any], *, input_kind: InputKind, vocab_size: int, n_features: int = 1) -> np.ndarray:
    """Validate a session step's values: float ``(T, n_features)`` or int32 ``(T,)``."""
    if len(values) == 0:
        raise InvalidInput("Send at least one value.", field="values", expected="a non-empty list", got=[])
    if input_kind == "float":
        return _steps(values, n_features, "values").astype(np.float32)
    array = _steps(values, 1, "values").reshape(-1)
    return _check_tokens(array, vocab_size, lambda flat: f"values[{flat}]")
