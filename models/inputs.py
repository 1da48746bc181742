"""Turning request sequences into model input arrays, with the contract's padding rules.

Shorter sequences are pre-padded with 0 (as ``keras.utils.pad_sequences`` does); longer ones are an
error unless the caller asks to truncate. Token ids must be whole numbers within the vocabulary.
Every error names the offending field, what was expected and what was sent.
"""

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np

from models.architectures import InputKind
from models.errors import InvalidInput

Truncate = Literal["pre", "post"]


def _check_tokens(values: np.ndarray, vocab_size: int, locate: Callable[[int], str]) -> np.ndarray:
    """Validate token ids held as floats; return them as int32. ``locate`` names a flat index."""
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
    return values.astype(np.int32)


def to_model_input(
    sequences: Sequence[Sequence[float]],
    *,
    input_kind: InputKind,
    max_len: int,
    vocab_size: int,
    truncate: Truncate | None = None,
    field: str = "sequences",
) -> np.ndarray:
    """Pad, truncate and validate a batch: float ``(n, max_len, 1)`` or int32 ``(n, max_len)``."""
    if len(sequences) == 0:
        raise InvalidInput("Send at least one sequence.", field=field, expected="a non-empty list", got=[])
    batch = np.zeros((len(sequences), max_len), dtype=np.float64)
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
        batch[i, max_len - n :] = seq
        lengths[i] = n
    if input_kind == "float":
        return batch.astype(np.float32)[:, :, None]

    def locate(flat: int) -> str:
        row, col = divmod(flat, max_len)
        return f"{field}[{row}][{col - (max_len - int(lengths[row])) + int(cut[row])}]"

    return _check_tokens(batch, vocab_size, locate)


def to_step_input(values: Sequence[float], *, input_kind: InputKind, vocab_size: int) -> np.ndarray:
    """Validate a session step's values: float ``(T,)`` or int32 ``(T,)``."""
    if len(values) == 0:
        raise InvalidInput("Send at least one value.", field="values", expected="a non-empty list", got=[])
    array = np.asarray(values, dtype=np.float64)
    if input_kind == "float":
        return array.astype(np.float32)
    return _check_tokens(array, vocab_size, lambda flat: f"values[{flat}]")
