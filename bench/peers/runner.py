"""``bench/run.py --peers``: lstm-serve beside KServe, BentoML, LitServe, a hand-written FastAPI +
onnxruntime endpoint and two floors, on the same model and the same load.

1. Prepare each peer's virtual environment (``venvs.py``; minutes on first use, instant afterwards).
2. Train the benchmark model through lstm-serve's API (``bench.run.train_model``); its version folder holds
   ``predict.onnx``, which every peer serves.
3. Start every server, check each answer against Keras on the benchmark sequence (1e-5) before any timing.
4. Warm each up, then interleaved rounds (every connection count, every server, again): while one server
   is measured with wrk, every other one is stopped (SIGSTOP to its process tree), so two cores are shared
   by wrk and the measured server only; server CPU is read from the measured process tree.
5. Write the report (``report.py``) to stdout and ``bench/results-peers.md``.

Every process started here is resumed and stopped in a ``finally``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

from bench.peers.contenders import Contender, Launch, contenders
from bench.peers.report import render_peers
from bench.peers.venvs import DEFAULT_CACHE, ensure_venv
from bench.run import (
    ROOT, SEQUENCE, Cell, Server, WrkResult, collect_meta, ensure_wrk, publish, run_wrk, stop_all, train_model,
    write_predict_script,
)

PEER_RESULTS = ROOT / "bench" / "results-peers.md"
TOLERANCE = 1e-5
WARM_UP_S = 2.0


def keras_probability(keras_path: Path, sequence: list[float]) -> float:
    """The Keras model's probability for ``sequence`` (runs in a child process: see ``reference``)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter, as in base_env
    import keras
    import numpy as np

    model = keras.models.load_model(keras_path)
    return float(np.asarray(model(np.asarray(sequence, dtype=np.float32).reshape(1, -1, 1)))[0, 0])


def reference(keras_path: Path) -> float:
    """Keras's answer for the benchmark sequence, computed in a short-lived process so TensorFlow's memory
    and threads are gone before anything is timed."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(keras_probability, keras_path, SEQUENCE).result()


def check_answers(servers: dict[str, Server], roster: list[Contender], expected: float) -> dict[str, float]:
    """Post each server's body a few times (warm caches and connections); every model-serving answer must
    be within TOLERANCE of Keras, every floor's must be JSON. Returns the probabilities read."""
    answers: dict[str, float] = {}
    for contender in roster:
        server = servers[contender.label]
        for _ in range(20):
            response = server.http.post(
                contender.path, content=contender.body_json, headers={"Content-Type": "application/json"}
            )
            if response.status_code != 200:
                raise RuntimeError(f"{contender.label} answered {response.status_code}: {response.text[:500]}")
        payload = response.json()
        if contender.read is None:
            continue
        try:
            probability = float(contender.read(payload))
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise RuntimeError(f"{contender.label} answered an unexpected shape ({exc!r}): {payload}") from None
        if abs(probability - expected) > TOLERANCE:
            raise RuntimeError(f"{contender.label} answered {probability}, Keras {expected}: beyond {TOLERANCE}")
        answers[contender.label] = probability
    return answers


def measure(
    wrk: str, servers: dict[str, Server], contender: Contender, script: Path, connections: int, duration: float,
    threads: int, record: bool = True,
) -> WrkResult:
    """One wrk run against ``contender`` with every other server stopped; the result (CPU included when
    ``record``)."""
    for label, server in servers.items():
        if label != contender.label:
            server.pause()
    server = servers[contender.label]
    server.resume()
    return run_wrk(wrk, server.url + contender.path, script, connections, duration, threads, server if record else None)


def run_peers(args: argparse.Namespace) -> int:
    """The whole peer benchmark, from ``bench/run.py``'s parsed arguments (``--peers``)."""
    connections = [int(c) for c in args.connections.split(",")]
    output = args.output or PEER_RESULTS
    wrk = ensure_wrk()
    roster = contenders()
    names = sorted({c.venv for c in roster if c.venv})
    with ThreadPoolExecutor(len(names)) as pool:  # downloads and unpacking: mostly waiting, so side by side
        pythons = dict(zip(names, pool.map(lambda name: ensure_venv(name, args.venv_cache or DEFAULT_CACHE), names)))
    meta = collect_meta(wrk, args.duration, args.repeats)
    print(f"{meta['date']} | {meta['cpu']} x{meta['cores']} | load {meta['load']}", flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="lstm-serve-peers-"))
    servers: dict[str, Server] = {}
    cells: dict[tuple[str, int], Cell] = {}
    try:
        print("Training the bench model through lstm-serve's API ...", flush=True)
        keras_path = train_model(tmp / "models", tmp)
        onnx_path = keras_path.parent / "predict.onnx"
        if not onnx_path.exists():
            raise RuntimeError(f"lstm-serve left no {onnx_path}")
        expected = reference(keras_path)
        launch = Launch(tmp / "models", onnx_path, tmp, pythons)
        for contender in roster:
            servers[contender.label] = contender.start(launch)
        for contender in roster:
            servers[contender.label].wait_ready(contender.ready_path)
        answers = check_answers(servers, roster, expected)
        print(f"  every server answers; Keras {expected:.7f}, {answers}", flush=True)

        scripts = {c.label: write_predict_script(tmp / f"peer-{i}.lua", c.body_json) for i, c in enumerate(roster)}
        for contender in roster:
            measure(wrk, servers, contender, scripts[contender.label], 8, WARM_UP_S, args.threads, record=False)

        for round_no in range(1, args.repeats + 1):
            for c in connections:
                for contender in roster:
                    result = measure(wrk, servers, contender, scripts[contender.label], c, args.duration, args.threads)
                    cells.setdefault((contender.label, c), Cell(contender.label, c)).runs.append(result)
                    print(
                        f"  round {round_no} c={c:<3d} {result.rps:9.1f} req/s  p50 {result.p50_ms:7.2f} ms  p99 "
                        f"{result.p99_ms:7.2f} ms  cpu {result.cpu_ms_per_request:6.3f} ms/req  errors "
                        f"{result.status_errors}+{result.socket_errors}  {contender.label}",
                        flush=True,
                    )
    finally:
        stop_all(servers.values())
        shutil.rmtree(tmp, ignore_errors=True)

    publish(render_peers(cells, roster, connections, meta, expected, answers), output)
    return 0

