"""The README's "From the question to the service" script, run as written against a real process: the five
models of the question in Keras 3, trained, saved, uploaded, predicted and (the stateful one) stepped, each
checked against Keras by the script itself."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.process import ServiceProcess, service_env

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## From the question to the service"
SCRIPT_TIMEOUT_S = 600


def question_script() -> str:
    """The first Python block of the section."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index(SECTION) :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "no python block in the section"
    return match.group(1)


def test_the_script_is_keras_3() -> None:
    code = "\n".join(line.split("#")[0] for line in question_script().splitlines())  # code, not comments
    assert "batch_input_shape" not in code and "input_length" not in code and "layers.wrappers" not in code
    assert "keras.Input(batch_shape=(1, 1, 1))" in code and "keras.layers.TimeDistributed" in code


@pytest.mark.slow
@pytest.mark.e2e
def test_readme_question_script_runs_against_the_service(tmp_path: Path) -> None:
    (tmp_path / "cwd").mkdir()
    service = ServiceProcess(tmp_path / "cwd", service_env(tmp_path / "models", DEMO_MODEL="false", LOG_LEVEL="warning"), "readme")
    try:
        service.wait_ready()
        (tmp_path / "work").mkdir()
        script = tmp_path / "work" / "question_to_service.py"
        script.write_text(question_script())
        env = {**os.environ, "LSTM_SERVE_URL": service.url, "TF_CPP_MIN_LOG_LEVEL": "2"}
        run = subprocess.run(
            [sys.executable, str(script)], cwd=script.parent, env=env, capture_output=True, text=True,
            timeout=SCRIPT_TIMEOUT_S,
        )
        assert run.returncode == 0, f"{run.stdout[-2000:]}\n{run.stderr[-4000:]}\n{service.log_tail()}"
        for architecture in ("lstm", "stateful_lstm", "td_dense_lstm", "embedding_lstm", "embedding_bilstm"):
            assert re.search(rf"^{architecture} +served", run.stdout, re.M), run.stdout
        assert "session: 20 steps" in run.stdout
        listed = {m["name"] for m in service.http.get("/models").json()}
        assert {f"question-{a}" for a in ("lstm", "stateful_lstm", "td_dense_lstm")} <= listed
    finally:
        service.kill()
