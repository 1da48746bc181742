"""Built-in datasets: generated from a seed, small, nothing downloaded.

Each one probes something the five architectures differ on, so a comparison on it means something. Four
are the question's binary tasks over one value or one token per step; ``movements`` (three channels, four
classes) and ``next_value`` (a number to predict) are the multi-class and regression ones.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from models.architectures import InputKind
from models.errors import DatasetNotFound
from models.tasks import Task

@dataclass(frozen=True)
class Dataset:
    """A generated sequence task.

    Example::

        >>> x, y = DATASETS["movements"].generate(seed=0)
        >>> x.shape, sorted(set(y.tolist()))
        ((800, 40, 3), [0, 1, 2, 3])
    """

    name: str
    input_kind: InputKind
    description: str
    n_sequences: int
    max_len: int
    vocab_size: int | None
    _generate: Callable[[np.random.Generator, int, int], tuple[np.ndarray, np.ndarray]]
    #: What the labels are: 0/1, a class id ``0..n_classes-1``, or a number to predict.
    task: Task = "binary"
    #: Values per step: sequences are ``(n, max_len)`` when 1, ``(n, max_len, n_features)`` otherwise.
    n_features: int = 1
    #: Distinct labels of a classification task; ``None`` for regression.
    n_classes: int | None = 2

    def generate(self, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(sequences, labels)``: sequences float or int token ids as above; labels int32 class ids
        (0/1 for binary) or, for regression, one float32 target per sequence."""
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


_MOVEMENT_NOISE = 0.4


def _movements(rng: np.random.Generator, n: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Three noisy sensor channels; the class is the movement under the noise:
    0 still, 1 walking (two channels oscillate a quarter period apart), 2 turning (the third channel
    ramps), 3 jumping (a short burst on the second channel at a random time)."""
    labels = rng.integers(0, 4, n)
    t = np.linspace(0.0, 1.0, length)
    x = rng.normal(0.0, _MOVEMENT_NOISE, (n, length, 3))
    amplitude = rng.uniform(0.6, 1.2, n)
    phase = rng.uniform(0.0, 2 * np.pi, n)
    burst = rng.integers(0, length - 4, n)
    direction = rng.choice([-1.0, 1.0], n)
    for i, label in enumerate(labels):
        if label == 1:
            x[i, :, 0] += amplitude[i] * np.sin(6 * np.pi * t + phase[i])
            x[i, :, 1] += amplitude[i] * np.cos(6 * np.pi * t + phase[i])
        elif label == 2:
            x[i, :, 2] += direction[i] * amplitude[i] * (2 * t - 1)
        elif label == 3:
            x[i, burst[i] : burst[i] + 4, 1] += 2 * amplitude[i]
    return x.astype(np.float32), labels.astype(np.int32)


def _next_value(rng: np.random.Generator, n: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy samples of ``a * sin(w k + p)`` for steps ``k < length``; the target is the curve's clean value
    at step ``length``, so a model must read amplitude, frequency and phase through the noise."""
    amplitude = rng.uniform(0.5, 1.5, n)
    frequency = rng.uniform(0.2, 0.6, n)
    phase = rng.uniform(0.0, 2 * np.pi, n)
    steps = np.arange(length + 1)
    curve = amplitude[:, None] * np.sin(frequency[:, None] * steps[None, :] + phase[:, None])
    x = curve[:, :length] + rng.normal(0.0, 0.1, (n, length))
    return x.astype(np.float32), curve[:, length].astype(np.float32)


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
        Dataset(
            "movements",
            "float",
            "Movements: three noisy sensor channels per step, four classes (0 still, 1 walking, 2 turning, "
            "3 jumping); input (40, 3), label a class id. The classes differ in which channel moves and how, "
            "so the model must read the channels together.",
            800,
            40,
            None,
            _movements,
            task="multiclass",
            n_features=3,
            n_classes=4,
        ),
        Dataset(
            "next_value",
            "float",
            "Next value: 30 noisy samples of a sine of random amplitude, frequency and phase; the target is the "
            "curve's next (noise-free) value, a float. Regression: input (30, 1), ranked by mean absolute error.",
            800,
            30,
            None,
            _next_value,
            task="regression",
            n_features=1,
            n_classes=None,
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
