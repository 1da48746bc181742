"""The ``lstm-serve`` console script end to end, against a real ``python -m service`` process."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.process import SEQUENCES, ServiceProcess, service_env

pytestmark = pytest.mark.e2e

CLI = Path(sys.executable).with_name("lstm-serve")
ARCHITECTURES = ("lstm", "stateful_lstm", "td_dense_lstm", "embedding_lstm", "embedding_bilstm")
MODEL = "cli-model"
TIMEOUT_S = 180


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    root = tmp_path_factory.mktemp("cli")
    workdir = root / "cwd"
    workdir.mkdir()
    process = ServiceProcess(workdir, service_env(root / "models", DEMO_MODEL="false"), "cli")
    try:
        process.wait_ready()
        yield process
    finally:
        process.kill()


def cli_env(service: ServiceProcess) -> dict[str, str]:
    # Wide enough that rich never folds a table cell; no API key from the caller's environment.
    env = {k: v for k, v in os.environ.items() if k not in ("API_KEY", "LSTM_SERVE_URL")}
    return {**env, "LSTM_SERVE_URL": service.url, "COLUMNS": "160"}


def run_cli(service: ServiceProcess, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), *args], input=stdin, capture_output=True, text=True, env=cli_env(service), timeout=TIMEOUT_S
    )


@pytest.fixture(scope="module")
def trained_model(service: ServiceProcess) -> subprocess.CompletedProcess[str]:
    """``lstm-serve train`` of a small model, run once for the module."""
    return run_cli(service, "train", MODEL, "--architecture", "lstm", "--dataset", "noisy_trend", "--epochs", "2", "--units", "4")


def test_console_script_is_installed_and_starts_without_keras() -> None:
    assert CLI.exists(), f"{CLI} missing: pip install -e '.[test]'"
    probe = "import sys, service.cli; assert not any(m == 'keras' or m.startswith(('keras.', 'models')) for m in sys.modules), sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", probe], check=True, timeout=60)


def test_architectures_lists_all_five(service: ServiceProcess) -> None:
    result = run_cli(service, "architectures")
    assert result.returncode == 0, result.stderr
    for name in ARCHITECTURES:
        assert name in result.stdout
    assert "when to use" in result.stdout


def test_train_shows_progress_and_succeeds(service: ServiceProcess, trained_model: subprocess.CompletedProcess[str]) -> None:
    assert trained_model.returncode == 0, trained_model.stdout + trained_model.stderr
    assert "2/2" in trained_model.stdout  # the progress bar's final state
    assert "val_accuracy" in trained_model.stdout
    assert f"succeeded: model '{MODEL}' version 1" in trained_model.stdout
    models = run_cli(service, "models")
    assert models.returncode == 0 and MODEL in models.stdout


def test_predict_prints_the_probabilities_of_the_api(service: ServiceProcess, trained_model: subprocess.CompletedProcess[str]) -> None:
    assert trained_model.returncode == 0
    direct = service.predict(MODEL, SEQUENCES)

    as_json = run_cli(service, "predict", MODEL, "--sequences", json.dumps(SEQUENCES), "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == direct

    table = run_cli(service, "predict", MODEL, stdin=json.dumps({"sequences": SEQUENCES}))
    assert table.returncode == 0, table.stderr
    rows = re.findall(r"│\s*(\d+)\s*│\s*([0-9.]+)\s*│\s*([01])\s*│", table.stdout)
    assert [int(i) for i, _, _ in rows] == list(range(len(SEQUENCES)))
    for (_, probability, label), expected in zip(rows, direct["predictions"], strict=True):
        assert float(probability) == pytest.approx(expected["probability"], abs=1e-6)
        assert int(label) == expected["label"]


def test_compare_prints_leaderboard_and_saves_plot(service: ServiceProcess, tmp_path: Path) -> None:
    plot = tmp_path / "curves.png"
    # Every architecture that fits float data: stateful_lstm reuses lstm's fit, the token ones are skipped.
    result = run_cli(
        service, "compare", "--dataset", "noisy_trend", "--epochs", "1", "--units", "4", "--dense-units", "4",
        "--plot", str(plot),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    board = result.stdout[result.stdout.index("Leaderboard"):]
    for name in ("lstm", "stateful_lstm", "td_dense_lstm"):
        assert re.search(rf"│\s*[123]\s*│\s*{name}\b", board), name
    assert "val_accuracy" in board and "val_loss" in board  # the binary task's columns
    # One reason for both token architectures: one line, not repeated in the recommendation.
    assert result.stdout.count("Skipped embedding_lstm, embedding_bilstm: float data") == 1
    assert result.stdout.count("whole-number token ids") == 1
    assert "Best: " in result.stdout  # the recommendation text
    assert "3/3" in result.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 5_000


def test_session_steps_resets_and_matches_after_reset(service: ServiceProcess, trained_model: subprocess.CompletedProcess[str]) -> None:
    assert trained_model.returncode == 0
    result = run_cli(service, "session", MODEL, stdin="0.1\n0.2 0.3\nreset\n0.1\nquit\n")
    assert result.returncode == 0, result.stderr
    steps = re.findall(r"steps_seen (\d+)\s+probability ([0-9.]+)", result.stdout)
    assert [int(s) for s, _ in steps] == [1, 3, 1]
    assert "reset" in result.stdout
    assert steps[0][1] == steps[2][1]
    # The same first step through the API directly.
    session = service.http.post(f"/models/{MODEL}/sessions").json()["session_id"]
    direct = service.http.post(f"/sessions/{session}/step", json={"values": [0.1]}).json()["probability"]
    assert float(steps[0][1]) == pytest.approx(direct, abs=1e-6)


def test_unknown_model_is_exit_2_with_the_error_code(service: ServiceProcess) -> None:
    result = run_cli(service, "predict", "no-such-model", "--sequences", "[[0.1]]")
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "model_not_found" in lines[0] and "no-such-model" in lines[0]


def test_unreachable_url_is_named() -> None:
    result = subprocess.run(
        [str(CLI), "models", "--url", "http://127.0.0.1:9"], capture_output=True, text=True, timeout=60,
        env={k: v for k, v in os.environ.items() if k != "API_KEY"},
    )
    assert result.returncode == 3
    assert "could not reach lstm-serve at http://127.0.0.1:9" in result.stderr


#: Runs argv[1:] with SIGINT at its default. A test run started in the background (``cmd &`` in a shell without
#: job control) hands its children SIGINT ignored, an ignored signal stays ignored across exec, and Python then
#: never raises KeyboardInterrupt: the CLI would sleep through the Ctrl-C this test sends, as no terminal would.
WITH_DEFAULT_SIGINT = "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])"


def test_ctrl_c_cancels_the_training_job(service: ServiceProcess) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", WITH_DEFAULT_SIGINT, str(CLI), "train", "cli-cancel", "--dataset", "noisy_trend", "--epochs", "200", "--units", "4"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(service),
    )
    try:
        first = process.stdout.readline() if process.stdout else ""
        job_id = re.search(r"job ([0-9a-f]+)", first)
        assert job_id, first
        deadline = time.monotonic() + 60
        while service.http.get(f"/jobs/{job_id[1]}").json()["status"] != "running" and time.monotonic() < deadline:
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert "cancelling job" in stderr
    deadline = time.monotonic() + 60
    while (status := service.http.get(f"/jobs/{job_id[1]}").json()["status"]) == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert status == "cancelled"
    assert service.http.get("/models/cli-cancel").status_code == 404


@pytest.mark.parametrize(
    ("command", "listed", "absent"),
    [
        ("serve", ["--host", "--port", "--model-dir"], ["--url", "--api-key"]),
        ("worker", [], ["--url", "--api-key"]),
        ("predict", ["--url", "--api-key", "--sequences"], ["--host", "--model-dir"]),
        ("models", ["--url", "--api-key", "--json"], ["--host", "--port"]),
    ],
)
def test_options_appear_only_under_the_commands_they_apply_to(command: str, listed: list[str], absent: list[str]) -> None:
    run = subprocess.run([str(CLI), command, "--help"], capture_output=True, text=True, timeout=TIMEOUT_S)
    assert run.returncode == 0, run.stderr
    options = set(re.findall(r"(--[a-z-]+)", run.stdout))
    assert set(listed) <= options, run.stdout
    assert not set(absent) & options, run.stdout
    if command == "serve":
        refused = subprocess.run([str(CLI), "serve", "--url", "http://x"], capture_output=True, text=True, timeout=TIMEOUT_S)
        assert refused.returncode == 2 and "unrecognized arguments: --url" in refused.stderr


def test_session_streams_over_the_websocket_and_saves_and_restores_its_state(
    service: ServiceProcess, trained_model: subprocess.CompletedProcess[str], tmp_path: Path
) -> None:
    assert trained_model.returncode == 0
    state_file = tmp_path / "state.json"
    first = run_cli(service, "session", MODEL, "--state-file", str(state_file), stdin="0.1\n0.2 0.3\nquit\n")
    assert first.returncode == 0, first.stderr
    assert "WebSocket /sessions/" in service.log_tail(200)  # stepped over the stream, not HTTP
    saved = json.loads(state_file.read_text())
    assert saved["steps_seen"] == 3 and saved["format"] == "lstm-serve.session-state.v1"
    assert "saved to" in first.stderr

    # Restored from the file, over HTTP this time: it goes on at step 3 as one session fed all four values.
    again = run_cli(service, "session", MODEL, "--http", "--state-file", str(state_file), stdin="0.4\n")
    assert again.returncode == 0, again.stderr
    steps = re.findall(r"steps_seen (\d+)\s+probability ([0-9.]+)", again.stdout)
    assert [int(s) for s, _ in steps] == [4]
    session = service.http.post(f"/models/{MODEL}/sessions").json()["session_id"]
    direct = service.http.post(f"/sessions/{session}/step", json={"values": [0.1, 0.2, 0.3, 0.4]}).json()
    assert float(steps[0][1]) == pytest.approx(direct["probability"], abs=1e-6)

    # A fork of that session answers what the session itself answers next, and leaves it untouched.
    # --fork=ID: a session id may begin with "-", which argparse would take for an option after a space.
    forked = run_cli(service, "session", MODEL, f"--fork={session}", stdin="0.5\n")
    assert forked.returncode == 0, forked.stderr
    fork_p = float(re.findall(r"steps_seen 5\s+probability ([0-9.]+)", forked.stdout)[0])
    assert service.http.get(f"/sessions/{session}").json()["steps_seen"] == 4
    own = service.http.post(f"/sessions/{session}/step", json={"values": [0.5]}).json()["probability"]
    assert fork_p == pytest.approx(own, abs=1e-6)
