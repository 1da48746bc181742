"""Built-in datasets: generated from a seed, small, nothing downloaded.

Each one probes something the five architectures differ on, so a comparison on it means something.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from models.architectures import InputKind
from models.errors import DatasetNotFound


@dataclass(frozen=True)
class Dataset:
    """A generated binary classification task."""

    name: str
    input_kind: InputKind
    description: str
    n_sequences: int
    max_len: int
    vocab_size: int | None
    _generate: Callable[[np.random.Generator, int, int], tuple[np.ndarray, np.ndarray]]

    def generate(self, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(sequences, labels)``: float (n, max_len) or int (n, max_len), labels 0/1."""
        return self._generate(np.random.default_rng(seed), self.n_sequences, self.max_len)


def _noisy_trend(rng: np.random.Generator, n: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, 2, n)
    slopes = rng.uniform(0.3, 1.0, n) * np.where(labels == 1, 1.0, -1.0)
    t = np.linspace(-1.0, 1.0, length)
    x = slopes[:, None] * t[None, :] + rng.normal(0.0, 0.6, (n, length))
    return x.astype(np.float32), labels.astype(np.int32)


def _long_memory(rng: np.random.Generator, n: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, 2, n)
    x = rng.normal(0.0, 0.5, (n, length))
    x[:, 0] = np.where(labels == 1, 1.0, -1.0) * rng.uniform(0.5, 1.5, n)
    return x.astype(np.float32), labels.astype(np.int32)


_VOCAB = 50
_PATTERN = (3, 7)


def _token_pattern(rng: np.random.Generator, n: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, 2, n)
    x = rng.integers(1, _VOCAB, (n, length))
    # Break every accidental occurrence so that only planted patterns carry the label.
    for row in x:
        hits = np.flatnonzero((row[:-1] == _PATTERN[0]) & (row[1:] == _PATTERN[1]))
        row[hits + 1] = 8
    for i in np.flatnonzero(labels == 1):
        start = rng.integers(0, length - 1)
        x[i, start : start + 2] = _PATTERN
    return x.astype(np.int32), labels.astype(np.int32)


def _token_cue_start(rng: np.random.Generator, n: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, 2, n)
    x = rng.integers(3, _VOCAB, (n, length))
    x[:, 0] = np.where(labels == 1, 1, 2)
    return x.astype(np.int32), labels.astype(np.int32)


DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset(
            "noisy_trend",
            "float",
            "Noisy trend: is the series going up or down? The slope hides under heavy noise, so the model has "
            "to integrate over the whole sequence.",
            800,
            30,
            None,
            _noisy_trend,
        ),
        Dataset(
            "long_memory",
            "float",
            "Long memory: the label is the sign of the first value, followed by 39 steps of noise; the LSTM "
            "must carry one early fact to the end.",
            800,
            40,
            None,
            _long_memory,
        ),
        Dataset(
            "token_pattern",
            "tokens",
            f"Token pattern: does the bigram {_PATTERN[0]} {_PATTERN[1]} occur anywhere in a sequence of "
            f"random tokens (vocabulary {_VOCAB})? Tests what an embedding plus LSTM can detect.",
            800,
            30,
            _VOCAB,
            _token_pattern,
        ),
        Dataset(
            "token_cue_start",
            "tokens",
            "Cue at the start: the first token decides the label, 29 random tokens follow. A left-to-right "
            "LSTM must carry the cue to the end; the backward half of a bidirectional LSTM reads it last.",
            800,
            30,
            _VOCAB,
            _token_cue_start,
        ),
    )
}


def get_dataset(name: str) -> Dataset:
    """Look a built-in dataset up by name; unknown names are an ``InvalidInput``."""
    try:
        return DATASETS[name]
    except KeyError:
        raise DatasetNotFound(
            f"Unknown dataset '{name}'.", field="dataset", expected=list(DATASETS), got=name
        ) from None
