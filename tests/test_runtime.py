"""Engine parity: every engine equals Keras within 1e-5 on random inputs, for all five architectures."""

from pathlib import Path

import numpy as np
import pytest

from models.architectures import ARCHITECTURES, ArchParams, build_sequence_model, build_step_model, param_count
from models.serving.engines import KerasEngine, OnnxEngine, export_engine, max_difference, random_inputs

PARAMS = ArchParams(max_len=12, units=6, vocab_size=40, embedding_dim=8, dense_units=5)


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_sequence_engines_match_keras(tmp_path: Path, name: str) -> None:
    model = build_sequence_model(ARCHITECTURES[name], PARAMS)
    engine = export_engine(model, tmp_path / "predict.onnx", PARAMS.vocab_size)
    assert isinstance(engine, OnnxEngine)
    for seed in (1, 2):
        inputs = random_inputs(model, 7, PARAMS.vocab_size, seed=seed)
        assert max_difference(engine, model, inputs) <= 1e-5
        assert max_difference(KerasEngine(model), model, inputs) <= 1e-5


@pytest.mark.parametrize("name", [n for n, a in ARCHITECTURES.items() if a.supports_sessions])
def test_step_engines_match_keras_and_the_whole_sequence(tmp_path: Path, name: str) -> None:
    arch = ARCHITECTURES[name]
    sequence_model = build_sequence_model(arch, PARAMS)
    step_model = build_step_model(arch, PARAMS)
    step_model.set_weights(sequence_model.get_weights())
    step_engine = export_engine(step_model, tmp_path / "step.onnx", PARAMS.vocab_size)
    assert isinstance(step_engine, OnnxEngine)
    assert max_difference(step_engine, step_model, random_inputs(step_model, 5, PARAMS.vocab_size, seed=3)) <= 1e-5

    x = random_inputs(sequence_model, 4, PARAMS.vocab_size, seed=4)[0]
    h = np.zeros((4, PARAMS.units), np.float32)
    c = np.zeros_like(h)
    for t in range(PARAMS.max_len):
        p, h, c = step_engine.run(x[:, t : t + 1], h, c)
    whole = np.asarray(sequence_model(x)).reshape(-1)
    np.testing.assert_allclose(p.reshape(-1), whole, atol=1e-5)


def test_export_failure_falls_back_to_tf_function(tmp_path: Path) -> None:
    model = build_sequence_model(ARCHITECTURES["lstm"], PARAMS)
    # A target in a folder that does not exist makes the export fail; the model must still be served.
    engine = export_engine(model, tmp_path / "missing" / "predict.onnx", PARAMS.vocab_size)
    assert isinstance(engine, KerasEngine)
    assert max_difference(engine, model, random_inputs(model, 3, PARAMS.vocab_size)) <= 1e-6
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_param_count_matches_keras(name: str) -> None:
    arch = ARCHITECTURES[name]
    assert param_count(arch, PARAMS) == build_sequence_model(arch, PARAMS).count_params()
