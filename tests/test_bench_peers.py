"""The peer benchmark's own logic, without timing anything: wrk output parsing, medians, the best peer and
the ratios in the report, each protocol's body and answer, the process-tree control, and the hand-written
peers' answers; and, of ``bench/run.py``'s own report, the steps / predict verdicts. The timed runs themselves
are ``bench/run.py`` and ``bench/run.py --peers`` (see the README's Performance section)."""

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from fastapi.testclient import TestClient
from onnx import TensorProto, helper

from bench.peers.contenders import contenders
from bench.peers.report import best_peer, ratio_table, render_peers, summary_table
from bench.peers.servers import fastapi_onnx, floors
from bench.peers.servers.onnx_model import ONNX_PATH_ENV
from bench.peers.venvs import REQUIREMENTS, pinned_version, venv_dir
from bench.run import SEQUENCE, STEPS, Cell, Server, parse_wrk, process_tree, render

ROOT = Path(__file__).resolve().parent.parent

#: wrk 4.1.0's output of a 1 s run with our Lua ``done`` (recorded against a server answering 501).
RECORDED = """Running 1s test @ http://127.0.0.1:18999/
  1 threads and 2 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     5.76ms    9.59ms  65.93ms   88.79%
    Req/Sec   709.70    137.61     0.88k    60.00%
  Latency Distribution
     50%    1.43ms
     75%    6.04ms
     90%   16.68ms
     99%   49.37ms
  716 requests in 1.02s, 388.07KB read
  Non-2xx or 3xx responses: 716
Requests/sec:    703.79
Transfer/sec:    381.45KB

BENCH_JSON {"requests":716,"duration_us":1017349,"bytes":397380,"p50_us":1433,"p90_us":16676,"p99_us":49368,\
"max_us":65935,"mean_us":5763.601852,"connect":0,"read":0,"write":0,"status":716,"timeout":0}
"""


def wrk_output(requests: int, p50_us: int, p99_us: int, seconds: float = 10.0, read_errors: int = 0) -> str:
    """wrk's output with our BENCH_JSON line, for a run of ``requests`` in ``seconds``."""
    raw = {
        "requests": requests, "duration_us": int(seconds * 1e6), "bytes": requests * 100, "p50_us": p50_us,
        "p90_us": p99_us, "p99_us": p99_us, "max_us": p99_us, "mean_us": float(p50_us), "connect": 0,
        "read": read_errors, "write": 0, "status": 0, "timeout": 0,
    }
    return f"Running 10s test @ http://127.0.0.1:1/\n  {requests} requests in {seconds}s\n\nBENCH_JSON {json.dumps(raw)}\n"


def test_parse_wrk_reads_the_recorded_output() -> None:
    result = parse_wrk(RECORDED, server_cpu_seconds=0.358)
    assert result.requests == 716
    assert result.rps == pytest.approx(716 / 1.017349)
    assert result.p50_ms == pytest.approx(1.433)
    assert result.p99_ms == pytest.approx(49.368)
    assert result.status_errors == 716
    assert result.socket_errors == 0
    assert result.cpu_ms_per_request == pytest.approx(0.5)
    assert math.isnan(parse_wrk(RECORDED).cpu_ms_per_request)  # no server measured


def test_parse_wrk_refuses_output_without_the_json_line() -> None:
    with pytest.raises(ValueError, match="BENCH_JSON"):
        parse_wrk(RECORDED.split("BENCH_JSON")[0])


def test_cells_report_medians_and_every_error() -> None:
    cell = Cell("x", 8, [
        parse_wrk(wrk_output(30_000, 900, 3_000), 3.0),
        parse_wrk(wrk_output(10_000, 2_000, 9_000, read_errors=2), 2.0),
        parse_wrk(wrk_output(20_000, 1_000, 4_000), 4.0),
    ])
    assert cell.rps == pytest.approx(2_000)
    assert cell.p50 == pytest.approx(1.0)
    assert cell.p99 == pytest.approx(4.0)
    assert cell.cpu_ms == pytest.approx(0.2)  # medians of 0.1, 0.2, 0.2 ms
    assert cell.errors == "2 (0 non-2xx, 2 socket)"
    assert cell.spread == "1000-3000"


def measured(rps: dict[str, dict[int, float]], cpu_ms: float = 0.2) -> dict[tuple[str, int], Cell]:
    """Cells of one 10 s run each: ``rps[label][connections]`` req/s, ``cpu_ms`` server CPU per request."""
    cells = {}
    for label, by_connections in rps.items():
        for c, value in by_connections.items():
            requests = int(value * 10)
            cells[(label, c)] = Cell(label, c, [parse_wrk(wrk_output(requests, 400 * c, 1_000 * c), requests * cpu_ms / 1e3)])
    return cells


@pytest.fixture(scope="module")
def roster() -> list:
    return contenders()


def label(roster: list, start: str) -> str:
    return next(c.label for c in roster if c.label.startswith(start))


def test_the_best_peer_is_the_fastest_server_doing_the_model_work(roster: list) -> None:
    floor, ours, fastapi, kserve = (label(roster, s) for s in ("raw ASGI", "lstm-serve (", "hand-written", "KServe"))
    cells = measured({
        floor: {1: 9_000, 32: 40_000},  # floors are faster and never the best peer
        ours: {1: 2_000, 32: 9_000},  # neither is lstm-serve
        fastapi: {1: 3_000, 32: 4_000},
        kserve: {1: 2_500, 32: 4_500},
    })
    assert best_peer(cells, roster, 1).label == fastapi
    assert best_peer(cells, roster, 32).label == kserve
    assert best_peer(cells, roster, 8) is None


def test_the_ratio_table_compares_each_lstm_serve_row_with_the_best_peer(roster: list) -> None:
    ours, defaults, fastapi, kserve = (
        label(roster, s) for s in ("lstm-serve (", "lstm-serve at", "hand-written", "KServe")
    )
    cells = measured({ours: {1: 2_000, 32: 9_000}, defaults: {1: 1_500}, fastapi: {1: 4_000, 32: 4_500},
                      kserve: {1: 1_000, 32: 6_000}})
    cells[(ours, 32)].runs[0].cpu_ms_per_request = 0.1  # half the best peer's 0.2 ms
    lines = ratio_table(cells, roster, [1, 32])
    assert lines[0].startswith("| connections | best peer | its req/s | lstm-serve (`LOG_LEVEL=warning`) / best peer")
    assert lines[2] == "| 1 | hand-written FastAPI + onnxruntime, no batching | 4,000 | 0.50x | 1.00x | 0.38x | 1.00x |"
    assert lines[3].startswith("| 32 | KServe ")
    assert lines[3].endswith(" | 6,000 | 1.50x | 0.50x | - | - |")


def test_the_summary_has_one_row_per_measured_server(roster: list) -> None:
    ours, kserve = label(roster, "lstm-serve ("), label(roster, "KServe")
    cells = measured({ours: {1: 2_000, 8: 5_000, 32: 9_000}, kserve: {1: 2_500, 8: 2_900, 32: 2_800}}, cpu_ms=0.15)
    lines = summary_table(cells, roster, [1, 8, 32])
    assert lines[0] == (
        "| server | c=1 req/s | c=8 req/s | c=32 req/s | c=1 p50 ms | c=32 p99 ms | CPU ms/req c=1 | CPU ms/req c=32 "
        "| errors |"
    )
    assert lines[2:] == [
        f"| **{ours}** | 2,000 | 5,000 | 9,000 | 0.40 | 32.0 | 0.150 | 0.150 | 0 |",
        f"| {kserve} | 2,500 | 2,900 | 2,800 | 0.40 | 32.0 | 0.150 | 0.150 | 0 |",
    ]


def test_the_report_states_the_answers_and_setup_of_every_server(roster: list) -> None:
    ours = label(roster, "lstm-serve (")
    meta = {"date": "d", "cpu": "c", "cores": "2", "load": "0", "git": "abc", "wrk": "wrk 4", "duration": "10",
            "repeats": "3"}
    report = render_peers(measured({ours: {1: 2_000}}), roster, [1], meta, 0.5032811, {ours: 0.5032815})
    assert "largest difference 4.0e-07, allowed 1e-5" in report
    assert '`POST /v1/models/bench:predict` `{"instances":[[0.0,0.2079,0.4035,...]]}`' in report
    assert report.count("\n  - ") == len(roster)


def test_every_body_carries_the_benchmark_sequence_and_every_answer_is_read(roster: list) -> None:
    ours = {"model": "bench", "version": 1, "predictions": [{"probability": 0.25, "label": 0}]}
    answers = {  # an answer of each server family, probability 0.25
        "lstm-serve": ours, "hand-written": ours, "KServe": {"predictions": [0.25]},
        "LitServe": {"probability": 0.25}, "BentoML": [0.25],
    }
    for contender in roster:
        body = json.loads(contender.body_json)
        values = next(iter(body.values()))
        assert values in (SEQUENCE, [SEQUENCE]), contender.label
        if contender.read is None:
            assert contender.kind == "floor"
            continue
        answer = next(a for family, a in answers.items() if family in contender.label)
        assert contender.read(answer) == 0.25, contender.label


def test_every_peer_environment_pins_its_server_and_lstm_serve_s_onnxruntime() -> None:
    constraints = (ROOT / "constraints.txt").read_text()
    ours = next(line.split("==")[1] for line in constraints.splitlines() if line.startswith("onnxruntime=="))
    files = sorted(p.stem for p in REQUIREMENTS.glob("*.txt"))
    assert files == ["bentoml", "handwritten", "kserve", "litserve"]
    for name in files:
        assert pinned_version(name, "onnxruntime") == ours, name
        assert all("==" in line for line in REQUIREMENTS.joinpath(f"{name}.txt").read_text().splitlines()
                   if line and not line.startswith("#")), f"{name}: every line pinned"
    assert [pinned_version(n, n) for n in ("kserve", "bentoml", "litserve")] == ["0.21.0", "1.4.40", "0.2.19"]
    assert venv_dir("kserve", Path("/c")).name.startswith("kserve-")


def test_pause_and_resume_reach_the_whole_process_tree(tmp_path: Path) -> None:
    """A parent that starts a child: SIGSTOP/SIGCONT reach both, CPU time is read from both."""
    code = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"
    server = Server("tree", [sys.executable, "-c", code], {"PORT": "1", "PATH": "/usr/bin:/bin"}, tmp_path)
    try:
        deadline = time.monotonic() + 30
        while len(process_tree(server.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        tree = process_tree(server.pid)
        assert len(tree) == 2 and tree[0] == server.pid
        server.pause()
        assert [state(pid, "T") for pid in tree] == ["T", "T"]
        server.resume()
        assert [state(pid, "S") for pid in tree] == ["S", "S"]
        assert server.cpu_seconds() > 0  # two Python start-ups
        server.pause()  # stop() must still end a stopped tree
    finally:
        server.stop()
    assert server.process.poll() is not None


def state(pid: int, expected: str) -> str:
    """The process state letter, once it is ``expected`` (signals arrive asynchronously) or after 5 s."""
    for _ in range(500):
        value = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if value == expected:
            break
        time.sleep(0.01)
    return value


@pytest.fixture(scope="module")
def mean_sigmoid_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in for ``predict.onnx``: (n, steps, 1) -> sigmoid(mean over steps), (n, 1); no TensorFlow."""
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["sequence"], ["mean"], axes=[1], keepdims=0),
         helper.make_node("Sigmoid", ["mean"], ["probability"])],
        "mean_sigmoid",
        [helper.make_tensor_value_info("sequence", TensorProto.FLOAT, [None, None, 1])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, [None, 1])],
    )
    path = tmp_path_factory.mktemp("onnx") / "predict.onnx"
    # IR version 8 (ONNX 1.10): what this onnxruntime reads; onnx itself now writes newer ones by default.
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), path)
    return path


def test_the_hand_written_peer_answers_lstm_serve_s_shape(mean_sigmoid_onnx: Path, monkeypatch) -> None:
    monkeypatch.setenv(ONNX_PATH_ENV, str(mean_sigmoid_onnx))
    sequences = [SEQUENCE, [-1.0] * len(SEQUENCE)]
    with TestClient(fastapi_onnx.app) as client:
        response = client.post("/models/bench/predict", json={"sequences": sequences})
    assert response.status_code == 200, response.text
    expected = 1 / (1 + np.exp(-np.mean(sequences, axis=1)))
    body = response.json()
    assert body["model"] == "bench"
    assert [p["probability"] for p in body["predictions"]] == pytest.approx(expected, abs=1e-6)
    assert [p["label"] for p in body["predictions"]] == [1, 0]


@pytest.mark.parametrize("app", [floors.asgi_app, floors.fastapi_app], ids=["asgi", "fastapi"])
def test_the_floors_read_the_body_and_answer_the_fixed_json(app) -> None:
    with TestClient(app) as client:
        response = client.post("/models/bench/predict", content=contenders()[0].body_json)
    assert response.status_code == 200
    assert response.content == floors.FIXED
    assert response.headers["content-type"] == "application/json"
    assert json.loads(floors.FIXED)["predictions"][0]["probability"] == 0.5


def test_run_py_keeps_its_default_run_and_offers_the_peers() -> None:
    done = subprocess.run([sys.executable, "bench/run.py", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "--peers" in done.stdout and "--quick" in done.stdout and "--venv-cache" in done.stdout


def test_bench_run_gives_the_steps_share_of_predict_at_every_step_count() -> None:
    cells = measured({"lstm-serve": {1: 3_000, 8: 5_000, 32: 7_000}, STEPS: {1: 2_400, 32: 6_650}})
    meta = {"date": "d", "cpu": "c", "cores": "2", "load": "0", "git": "abc", "wrk": "wrk 4", "duration": "10",
            "repeats": "3", "n_sessions": "256"}
    report = render(cells, [1, 8, 32], [1, 32], [], None, meta, {})
    assert "Steps at 1 connection: 80% of predict throughput (MISSES the >= 90% target)." in report
    assert "Steps at 32 connections: 95% of predict throughput (meets the >= 90% target)." in report
    assert "| 1 | n/a | n/a | 0.80x |" in report


def test_bench_run_refuses_step_counts_it_would_not_run_beside_predict() -> None:
    done = subprocess.run([sys.executable, "bench/run.py", "--connections", "1,8", "--step-connections", "1,32"],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2
    assert "--step-connections must be among --connections" in done.stderr
