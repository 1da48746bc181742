"""The built-in datasets: shapes, labels, determinism, and that each carries the signal it describes."""

import numpy as np
import pytest

from models.training.datasets import DATASETS


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_generation_matches_the_description(name: str) -> None:
    dataset = DATASETS[name]
    x, y = dataset.generate(seed=0)
    step = () if dataset.n_features == 1 else (dataset.n_features,)
    assert x.shape == (dataset.n_sequences, dataset.max_len, *step)
    assert y.shape == (dataset.n_sequences,)
    assert x.dtype == (np.int32 if dataset.input_kind == "tokens" else np.float32)
    assert np.isfinite(x).all() and np.isfinite(y).all()
    if dataset.task == "regression":
        assert y.dtype == np.float32 and dataset.n_classes is None
    else:
        assert y.dtype == np.int32
        assert sorted(set(y.tolist())) == list(range(dataset.n_classes))  # every class present
    if dataset.vocab_size is not None:
        assert 0 < x.min() and x.max() < dataset.vocab_size


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_generation_is_deterministic_per_seed(name: str) -> None:
    dataset = DATASETS[name]
    (x0, y0), (x0_again, y0_again), (x1, _) = dataset.generate(0), dataset.generate(0), dataset.generate(1)
    np.testing.assert_array_equal(x0, x0_again)
    np.testing.assert_array_equal(y0, y0_again)
    assert not np.array_equal(x0, x1)


def test_movements_classes_move_the_channels_they_describe() -> None:
    x, y = DATASETS["movements"].generate(seed=0)
    t = np.linspace(0.0, 1.0, x.shape[1])
    walk_spread = x[:, :, 0].std(axis=1)  # oscillation on channel 0
    turn_slope = np.abs(np.polyfit(t, x[:, :, 2].T, 1)[0])  # ramp on channel 2
    jump_peak = x[:, :, 1].max(axis=1)  # burst on channel 1
    still = y == 0
    assert walk_spread[y == 1].mean() > 1.5 * walk_spread[still].mean()
    assert turn_slope[y == 2].mean() > 2 * turn_slope[still].mean()
    assert jump_peak[y == 3].mean() > jump_peak[still].mean() + 1.0


def test_next_value_is_predictable_from_the_sequence() -> None:
    x, y = DATASETS["next_value"].generate(seed=0)
    train, test = slice(0, 600), slice(600, None)
    mean_error = np.abs(y[test] - y[train].mean()).mean()
    # Least squares on the last ten values already beats the mean by far: the sequence carries the target.
    features = np.c_[x[:, -10:], np.ones(len(x))]
    weights = np.linalg.lstsq(features[train], y[train], rcond=None)[0]
    linear_error = np.abs(features[test] @ weights - y[test]).mean()
    assert linear_error < mean_error / 3
