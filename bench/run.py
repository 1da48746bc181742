"""Benchmark lstm-serve side by side with a naive Keras server and a do-nothing FastAPI server.

One command, from the repository root::

    .venv/bin/python bench/run.py [--duration 10] [--repeats 3] [--quick]

It trains one ``lstm`` model (units 10, max_len 50) through lstm-serve's own HTTP API in a temporary
MODEL_DIR, then starts three real uvicorn processes (one worker each) on free loopback ports:

* ``lstm-serve``  - ``python -m service`` (ONNX Runtime),
* ``naive``       - ``bench.naive_server``: ``keras.models.load_model`` + ``model.predict`` per request,
* ``null``        - ``bench.null_server``: parses the body, returns a constant (the HTTP ceiling),

and drives each with the same closed-loop ``wrk`` load (one 50-step float sequence per request) at
1, 8 and 32 connections; beside it, lstm-serve answers the same sequence with 8 features per step to an
8-feature, 4-class ``lstm`` model (the "more than one output" row). Rounds are interleaved (every server at every connection count, then again),
so slow drifts of this shared machine hit every server alike; each cell reports the median over rounds.
Then it steps 256 sessions round-robin on lstm-serve, with sessions in-process and (when Redis answers at
``--redis-url``) on a second lstm-serve keeping them in Redis, and measures session memory on a fresh process.
KServe V2 inference is measured over gRPC beside HTTP on the same lstm-serve process (``bench.v2_load``:
one asyncio Python client for both, since wrk speaks no gRPC; compare them by server CPU per request), and so
are session steps over WebSocket streams beside the HTTP step route, for 1 and 64 clients (``bench.stream_load``).
Results go to stdout and ``bench/results.md``. Every process started here is killed in a ``finally``.

``--peers`` runs the peer benchmark instead (``bench/peers/runner.py``): the same model and load against
KServe, BentoML, LitServe, a hand-written FastAPI + onnxruntime endpoint and two floors.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import redis

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import stream_load, v2_load  # noqa: E402
from tests.process import drop_redis_keys  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results.md"
MODEL_NAME = "bench"
MAX_LEN = 50
UNITS = 10
READY_TIMEOUT_S = 180.0
JOB_TIMEOUT_S = 300.0

#: The one request body every predict benchmark sends: a single 50-step float sequence.
SEQUENCE = [round(0.8 * math.sin(i / 4.0) + 0.01 * i, 4) for i in range(MAX_LEN)]
PREDICT_BODY = json.dumps({"sequences": [SEQUENCE]}, separators=(",", ":"))
STEP_BODY = json.dumps({"values": [0.5]}, separators=(",", ":"))
#: Beside the binary one-feature model: an 8-feature, 4-class model of the same size (units 10, max_len 50).
MULTICLASS_NAME = "bench-multiclass"
MULTICLASS_FEATURES = 8
MULTICLASS_CLASSES = 4
MULTICLASS_ROW = "lstm-serve 8-feature multiclass"
MULTICLASS_BODY = json.dumps(
    {"sequences": [[[round(v + 0.1 * k, 4) for k in range(MULTICLASS_FEATURES)] for v in SEQUENCE]]}, separators=(",", ":")
)
STEPS = "lstm-serve steps"
#: Session steps (one value each) against predict (one 50-step sequence each), in req/s: issue 15's target.
STEPS_TARGET = 0.90
REDIS_STEPS = "lstm-serve steps (redis)"

# --------------------------------------------------------------------------------------------------
# wrk scripts. ``done`` prints one JSON line that run.py parses (latencies are in microseconds).

_WRK_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\nBENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"mean_us":%f,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""

_PREDICT_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[@BODY@]==]
""" + _WRK_DONE


def write_predict_script(path: Path, body: str) -> Path:
    """A wrk script at ``path`` that POSTs ``body`` (JSON) on every request; returns ``path``."""
    path.write_text(_PREDICT_LUA.replace("@BODY@", body))
    return path


#: Round-robin over the session ids in ``ids.lua``; wrk thread k of n takes ids k, k+n, k+2n, ... so two
#: threads never step the same session at once.
_STEP_LUA = """
local ids = dofile([==[@IDS@]==])
local threads = {}
local next_tid = 0
setup = function(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  table.insert(threads, thread)
end
local headers = {["Content-Type"] = "application/json"}
local body = [==[@BODY@]==]
local i = 0
local stride = 1
init = function(args)
  i = tonumber(tid) or 0
  stride = @NTHREADS@
end
request = function()
  local id = ids[(i % #ids) + 1]
  i = i + stride
  return wrk.format("POST", "/sessions/" .. id .. "/step", headers, body)
end
""" + _WRK_DONE


# --------------------------------------------------------------------------------------------------
# Processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """One uvicorn process (own process group), its log in a file, an httpx client on its port."""

    def __init__(self, label: str, argv: list[str], env: dict[str, str], workdir: Path) -> None:
        self.label = label
        self.port = int(env["PORT"])
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"{label}-{self.port}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            argv, env=env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.http = httpx.Client(base_url=self.url, timeout=60.0)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_ready(self, path: str = "/health/ready", timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.label} exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if self.http.get(path, timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"{self.label} not ready after {timeout} s:\n{self.log_tail()}")

    def rss_bytes(self) -> int:
        """VmRSS of the server process, from /proc."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS line")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server's process tree so far (every thread of the process and of its
        live descendants, plus the descendants they have reaped), from /proc. Some servers (BentoML, LitServe)
        answer from worker processes: the process alone would miss their work."""
        total = 0
        for pid in process_tree(self.pid):
            try:
                fields = _stat_fields(pid)
            except OSError:  # exited since the tree was listed
                continue
            total += sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime, stime, cutime, cstime
        return total / os.sysconf("SC_CLK_TCK")

    def pause(self) -> None:
        """SIGSTOP the whole process tree, so it takes no CPU while another server is measured."""
        _signal_tree(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT the whole process tree (harmless when it runs)."""
        _signal_tree(self.pid, signal.SIGCONT)

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it if it lingers."""
        self.http.close()
        if self.process.poll() is None:
            self.resume()  # a stopped process would not act on SIGTERM
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.process.wait(timeout=10)
        self._log.close()


def _stat_fields(pid: int) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name (index 0 is the state, 1 the parent id)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def process_tree(root: int) -> list[int]:
    """``root`` first, then its live descendants, found through the parent ids in /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                children.setdefault(int(_stat_fields(int(entry.name))[1]), []).append(int(entry.name))
            except OSError:  # exited while listing
                continue
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def _signal_tree(root: int, signum: int) -> None:
    for pid in process_tree(root):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def stop_all(servers: Iterable[Server]) -> None:
    """Stop every server; a failure is reported, not raised, so the others still stop."""
    for server in servers:
        try:
            server.stop()
        except Exception as exc:  # noqa: BLE001 - keep stopping the others
            print(f"could not stop {server.label}: {exc}", file=sys.stderr)


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("API_KEY", "API_KEY_ALL")}
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
    env.update(extra)
    return env


def start_lstm_serve(
    label: str, model_dir: Path, workdir: Path, log_level: str | None = "warning", **extra: str
) -> Server:
    """``python -m service`` on ``model_dir``; ``log_level=None`` leaves the service's default logging. gRPC only
    when ``GRPC_PORT`` is given (the default 8001 may be taken on this machine); sessions in-process unless
    ``SESSION_STORE`` is given."""
    env = base_env(
        HOST="127.0.0.1", PORT=str(free_port()), MODEL_DIR=str(model_dir), DEMO_MODEL="false",
        **{"SESSION_STORE": "memory", "GRPC_PORT": "0", **extra},
    )
    if log_level is None:
        env.pop("LOG_LEVEL", None)
    else:
        env["LOG_LEVEL"] = log_level
    return Server(label, [sys.executable, "-m", "service"], env, workdir)


def start_uvicorn(label: str, app: str, workdir: Path, python: str = sys.executable, **extra: str) -> Server:
    """``app`` on uvicorn (one worker, access log off), run by ``python`` (default: this interpreter)."""
    port = free_port()
    env = base_env(PORT=str(port), **extra)
    argv = [
        python, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1", "--log-level", "warning",
    ]
    return Server(label, argv, env, workdir)


# --------------------------------------------------------------------------------------------------
# wrk


def ensure_wrk() -> str:
    """Path of ``wrk``; installs the Debian package when missing (needs root), else fails clearly."""
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk not found: installing the Debian package 'wrk' with apt-get ...", flush=True)
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], env=env, check=False)
    found = shutil.which("wrk")
    if not found:
        sys.exit("bench/run.py needs wrk: install it with `sudo apt-get install wrk` (Debian/Ubuntu) and rerun.")
    return found


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    status_errors: int
    socket_errors: int
    cpu_ms_per_request: float = float("nan")
    raw: dict[str, Any] = field(default_factory=dict)


def run_wrk(
    wrk: str, url: str, script: Path, connections: int, duration: float, threads: int, server: Server | None = None
) -> WrkResult:
    threads = max(1, min(threads, connections))
    argv = [
        wrk, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s", "--timeout", "30s",
        "--latency", "-s", str(script), url,
    ]
    cpu_before = server.cpu_seconds() if server else 0.0
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 90)
    cpu = server.cpu_seconds() - cpu_before if server else float("nan")
    try:
        if done.returncode != 0:
            raise ValueError(f"exit status {done.returncode}")
        return parse_wrk(done.stdout, cpu)
    except ValueError as exc:
        raise RuntimeError(f"wrk failed ({exc}): {done.stdout}\n{done.stderr}") from None


def parse_wrk(stdout: str, server_cpu_seconds: float = float("nan")) -> WrkResult:
    """One run's result from wrk's output (the ``BENCH_JSON`` line of our Lua ``done``) and the CPU time the
    server spent during it; ValueError when the line is missing."""
    line = next((l for l in stdout.splitlines() if l.startswith("BENCH_JSON ")), None)
    if line is None:
        raise ValueError("no BENCH_JSON line")
    raw = json.loads(line.removeprefix("BENCH_JSON "))
    sockets = raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
    return WrkResult(
        rps=raw["requests"] / (raw["duration_us"] / 1e6),
        p50_ms=raw["p50_us"] / 1000.0,
        p99_ms=raw["p99_us"] / 1000.0,
        requests=raw["requests"],
        status_errors=raw["status"],
        socket_errors=sockets,
        cpu_ms_per_request=server_cpu_seconds * 1000.0 / raw["requests"] if raw["requests"] else float("nan"),
        raw=raw,
    )


@dataclass
class Cell:
    """Every round of one (server, connections) measurement; reported as medians."""

    server: str
    connections: int
    runs: list[WrkResult] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return statistics.median(r.rps for r in self.runs)

    @property
    def p50(self) -> float:
        return statistics.median(r.p50_ms for r in self.runs)

    @property
    def p99(self) -> float:
        return statistics.median(r.p99_ms for r in self.runs)

    @property
    def cpu_ms(self) -> float:
        return statistics.median(r.cpu_ms_per_request for r in self.runs)

    @property
    def errors(self) -> str:
        status = sum(r.status_errors for r in self.runs)
        sockets = sum(r.socket_errors for r in self.runs)
        if not status and not sockets:
            return "0"
        return f"{status + sockets} ({status} non-2xx, {sockets} socket)"

    @property
    def spread(self) -> str:
        values = [r.rps for r in self.runs]
        return f"{min(values):.0f}-{max(values):.0f}" if len(values) > 1 else "-"


#: Table rows of the V2 infer loads, by transport.
V2_ROWS = {"http": "lstm-serve v2 http", "grpc": "lstm-serve v2 grpc"}
STREAM_ROWS = {"http": "steps http (python)", "websocket": "steps websocket", "websocket-pipelined": "steps ws pipelined"}

# --------------------------------------------------------------------------------------------------
# Steps of the benchmark


def _train(server: Server, name: str, body: dict[str, Any]) -> int:
    """Train ``name`` on ``server`` through the HTTP API and wait; return the new version."""
    response = server.http.post(f"/models/{name}/train", json=body)
    if response.status_code != 202:
        raise RuntimeError(f"train answered {response.status_code}: {response.text}")
    job_id = response.json()["job_id"]
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while True:
        job = server.http.get(f"/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"training job {job_id} still {job['status']} after {JOB_TIMEOUT_S} s")
        time.sleep(0.2)
    if job["status"] != "succeeded":
        raise RuntimeError(f"training job {job['status']}: {job.get('error')}")
    return int(job["version"])


def train_model(model_dir: Path, workdir: Path) -> Path:
    """Train the ``bench`` model (and the 8-feature multiclass one beside it) through lstm-serve's HTTP API;
    return the ``bench`` model's ``model.keras`` path."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    t = np.linspace(-1.0, 1.0, MAX_LEN)
    x = np.where(labels[:, None] == 1, 1.0, -1.0) * rng.uniform(0.3, 1.0, (400, 1)) * t + rng.normal(0, 0.5, (400, MAX_LEN))
    body = {
        "architecture": "lstm",
        "params": {"max_len": MAX_LEN, "units": UNITS},
        "data": {"sequences": np.round(x, 4).tolist(), "labels": labels.tolist()},
        "epochs": 1,
        "seed": 0,
    }
    classes = rng.integers(0, MULTICLASS_CLASSES, 200)
    channels = rng.normal(0, 0.5, (200, MAX_LEN, MULTICLASS_FEATURES)) + classes[:, None, None] * t[None, :, None]
    multiclass = {
        "architecture": "lstm",
        "params": {"max_len": MAX_LEN, "units": UNITS, "n_features": MULTICLASS_FEATURES, "task": "multiclass",
                   "n_classes": MULTICLASS_CLASSES},
        "data": {"sequences": np.round(channels, 4).tolist(), "labels": classes.tolist()},
        "epochs": 1,
        "seed": 0,
    }
    server = start_lstm_serve("lstm-serve-train", model_dir, workdir)
    try:
        server.wait_ready()
        version = _train(server, MODEL_NAME, body)
        _train(server, MULTICLASS_NAME, multiclass)
    finally:
        server.stop()
    path = model_dir / MODEL_NAME / str(version) / "model.keras"
    if not path.exists():
        found = sorted((model_dir / MODEL_NAME).glob("*/model.keras"))
        if not found:
            raise RuntimeError(f"no model.keras under {model_dir / MODEL_NAME}")
        path = found[-1]
    return path


def run_v2(kind: str, server: Server, grpc_port: int, connections: int, duration: float) -> WrkResult:
    """One V2 infer load (``grpc`` or ``http``) on lstm-serve, as a ``WrkResult`` row with the server's CPU per request."""
    target = f"127.0.0.1:{grpc_port}" if kind == "grpc" else server.url
    cpu_before = server.cpu_seconds()
    load, probability = v2_load.run(kind, target, MODEL_NAME, SEQUENCE, connections, duration)
    cpu = server.cpu_seconds() - cpu_before
    if not math.isfinite(probability) or not 0.0 <= probability <= 1.0:
        raise RuntimeError(f"V2 {kind} answered {probability}")
    return _client_row(load, cpu, {"probability": probability})


def _client_row(load: v2_load.LoadResult, cpu_seconds: float, raw: dict[str, Any]) -> WrkResult:
    """A Python client's load (``v2_load`` / ``stream_load``) as a ``WrkResult`` row with server CPU per request."""
    return WrkResult(
        rps=load.rps,
        p50_ms=load.percentile(50),
        p99_ms=load.percentile(99),
        requests=load.requests,
        status_errors=load.errors,
        socket_errors=0,
        cpu_ms_per_request=cpu_seconds * 1000.0 / load.requests if load.requests else float("nan"),
        raw=raw,
    )


def run_stream_steps(kind: str, server: Server, session_ids: list[str], duration: float) -> WrkResult:
    """One client per session stepping it value by value (``http`` or ``websocket``), as a ``WrkResult`` row."""
    cpu_before = server.cpu_seconds()
    load = stream_load.run(kind, server.url, session_ids, duration)
    return _client_row(load, server.cpu_seconds() - cpu_before, {})


def check_predict_servers(servers: dict[str, Server]) -> dict[str, float]:
    """Warm each server up and check it answers the benchmark body with the same response shape."""
    probabilities: dict[str, float] = {}
    for label, server in servers.items():
        for _ in range(20):
            response = server.http.post(
                f"/models/{MODEL_NAME}/predict", content=PREDICT_BODY, headers={"Content-Type": "application/json"}
            )
        if response.status_code != 200:
            raise RuntimeError(f"{label} predict answered {response.status_code}: {response.text}")
        payload = response.json()
        if set(payload) != {"model", "version", "predictions"} or len(payload["predictions"]) != 1:
            raise RuntimeError(f"{label} predict answered an unexpected shape: {payload}")
        probabilities[label] = payload["predictions"][0]["probability"]
    return probabilities


def create_sessions(server: Server, count: int, workers: int = 8) -> list[str]:
    """Create ``count`` sessions with httpx from a small thread pool (one client per worker)."""
    per = [count // workers + (1 if i < count % workers else 0) for i in range(workers)]

    def make(n: int) -> list[str]:
        ids = []
        with httpx.Client(base_url=server.url, timeout=60.0) as client:
            for _ in range(n):
                response = client.post(f"/models/{MODEL_NAME}/sessions", json={"ttl_s": 24 * 3600})
                if response.status_code != 201:
                    raise RuntimeError(f"create session answered {response.status_code}: {response.text}")
                ids.append(response.json()["session_id"])
        return ids

    with ThreadPoolExecutor(workers) as pool:
        return [sid for chunk in pool.map(make, per) for sid in chunk]


def step_sessions_once(server: Server, ids: list[str], workers: int = 8) -> None:
    def step(chunk: list[str]) -> None:
        with httpx.Client(base_url=server.url, timeout=60.0) as client:
            for sid in chunk:
                response = client.post(f"/sessions/{sid}/step", content=STEP_BODY, headers={"Content-Type": "application/json"})
                if response.status_code != 200:
                    raise RuntimeError(f"step answered {response.status_code}: {response.text}")

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(step, [ids[i::workers] for i in range(workers)]))


def redis_answers(url: str) -> bool:
    """Whether a Redis server answers at ``url`` (the Redis rows are skipped otherwise)."""
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=2).ping())
    except redis.RedisError:
        return False


def measure_session_memory(model_dir: Path, workdir: Path, count: int) -> dict[str, float]:
    """RSS of a fresh lstm-serve before and after ``count`` sessions created and stepped once each.

    A warm-up of a few hundred sessions first (same thread pool, same routes) so thread stacks, caches and
    the loaded model are already in the baseline; the difference is then what the sessions hold."""
    server = start_lstm_serve("lstm-serve-memory", model_dir, workdir)
    try:
        server.wait_ready()
        warm = create_sessions(server, 300)
        step_sessions_once(server, warm)
        time.sleep(0.5)
        before = server.rss_bytes()
        t0 = time.perf_counter()
        ids = create_sessions(server, count)
        step_sessions_once(server, ids)
        elapsed = time.perf_counter() - t0
        time.sleep(0.5)
        after = server.rss_bytes()
        sample = server.http.get(f"/sessions/{ids[-1]}").json()
        if sample.get("steps_seen") != 1:
            raise RuntimeError(f"session not stepped once: {sample}")
    finally:
        server.stop()
    return {
        "sessions": count,
        "rss_before": before,
        "rss_after": after,
        "bytes_per_session": (after - before) / count,
        "seconds": elapsed,
    }


# --------------------------------------------------------------------------------------------------
# Report


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def git_revision() -> str:
    """The commit benchmarked, and whether service/ or models/ had uncommitted edits (they are what runs)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "service", "models"], cwd=ROOT, capture_output=True, text=True
        ).stdout.splitlines()
    except OSError:
        return "unknown"
    return f"{head} + {len(dirty)} uncommitted file(s) in service/ and models/" if dirty else f"{head} (clean service/ and models/)"


def publish(report: str, output: Path) -> None:
    """Print the Markdown report and write it to ``output``."""
    print()
    print(report)
    output.write_text(report)
    print(f"(written to {output})")


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


#: The long table of every (server, connections) cell; rows from ``table_row``.
TABLE_HEADER = [
    "| server | connections | req/s | p50 ms | p99 ms | errors | server CPU ms/req | req/s range |",
    "|---|---:|---:|---:|---:|---|---:|---|",
]


def table_row(server: str, connections: int, cell: Cell) -> str:
    """One row of ``TABLE_HEADER``'s table: the medians of ``cell``."""
    return (
        f"| {server} | {connections} | {cell.rps:,.0f} | {cell.p50:.2f} | {cell.p99:.2f} | {cell.errors} "
        f"| {cell.cpu_ms:.3f} | {cell.spread} |"
    )


def environment_lines(meta: dict[str, str]) -> list[str]:
    """The report's first lines: when, on what machine (and how loaded), which commit."""
    return [
        f"- Date: {meta['date']}",
        f"- CPU: {meta['cpu']}, {meta['cores']} cores (shared by the servers and wrk), load average at start {meta['load']}",
        f"- Code: {meta['git']}",
    ]


def collect_meta(wrk: str, duration: float, repeats: int) -> dict[str, str]:
    """What the report says about this run: date, machine, load, wrk's version, run length, commit."""
    wrk_version = subprocess.run([wrk, "--version"], capture_output=True, text=True).stdout.splitlines()[0].split("Copyright")[0].strip()
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": str(os.cpu_count()),
        "load": load_average(),
        "wrk": wrk_version,
        "duration": f"{duration:g}",
        "repeats": str(repeats),
        "git": git_revision(),
    }


def render(
    cells: dict[tuple[str, int], Cell],
    connections: list[int],
    step_connections: list[int],
    stream_clients: list[int],
    memory: dict[str, float] | None,
    meta: dict[str, str],
    probabilities: dict[str, float],
) -> str:
    lines = [
        "# lstm-serve benchmark",
        "",
        *environment_lines(meta),
        f"- Python {platform.python_version()}, {meta['wrk']}; one uvicorn worker per server, loopback",
        f"- Load: closed-loop wrk, {meta['duration']} s per run, {meta['repeats']} interleaved round(s); "
        "each cell is the median over rounds (req/s range in the last column). Server CPU ms/req is the server "
        "process's user+system CPU time during the run divided by its requests: less noisy than req/s here",
        f"- Predict body: one {MAX_LEN}-step float sequence; model `lstm`, units {UNITS}, max_len {MAX_LEN}, "
        "trained through lstm-serve's API (1 epoch)",
        "- Step body: `{\"values\": [0.5]}`, round-robin over "
        f"{meta['n_sessions']} sessions",
        "",
        *TABLE_HEADER,
    ]
    order = ["lstm-serve", "naive", "null"]
    for server in order + [MULTICLASS_ROW, STEPS, REDIS_STEPS] + list(V2_ROWS.values()):
        conns = step_connections if server in (STEPS, REDIS_STEPS) else connections
        for c in conns:
            cell = cells.get((server, c))
            if cell is None or not cell.runs:
                continue
            lines.append(table_row(server, c, cell))
    lines += ["", "Ratios (req/s, medians from this run):", "", "| connections | lstm-serve / naive | lstm-serve / null | steps / predict |",
              "|---:|---:|---:|---:|"]
    for c in connections:
        ls, nv, nl = (cells.get((s, c)) for s in order)
        st = cells.get((STEPS, c))
        lines.append(
            f"| {c} | {ratio(ls.rps, nv.rps) if ls and nv else 'n/a'} | {ratio(ls.rps, nl.rps) if ls and nl else 'n/a'} "
            f"| {ratio(st.rps, ls.rps) if st and st.runs and ls else '-'} |"
        )
    if any(cells.get((MULTICLASS_ROW, c)) for c in connections):
        lines += ["", f"Predict, 8-feature 4-class model beside the binary one-feature model (same process, units {UNITS}, "
                  f"max_len {MAX_LEN}; medians):", "", "| connections | binary req/s | multiclass req/s | multiclass / binary |"
                  " binary CPU ms/req | multiclass |", "|---:|---:|---:|---:|---:|---:|"]
        for c in connections:
            binary, multi = cells.get(("lstm-serve", c)), cells.get((MULTICLASS_ROW, c))
            if binary and multi and binary.runs and multi.runs:
                lines.append(f"| {c} | {binary.rps:,.0f} | {multi.rps:,.0f} | {ratio(multi.rps, binary.rps)} | "
                             f"{binary.cpu_ms:.3f} | {multi.cpu_ms:.3f} |")
    shares = [(c, st.rps / ls.rps) for c in step_connections
              if (st := cells.get((STEPS, c))) and st.runs and (ls := cells.get(("lstm-serve", c))) and ls.runs]
    if shares:
        lines.append("")
        lines += [f"Steps at {c} connection{'s' if c > 1 else ''}: {share:.0%} of predict throughput "
                  f"({'meets' if share >= STEPS_TARGET else 'MISSES'} the >= {STEPS_TARGET:.0%} target)." for c, share in shares]
    if any(cells.get((REDIS_STEPS, c)) for c in step_connections):
        lines += ["", "Session steps with the Redis store against the in-process store (req/s, medians):", "",
                  "| connections | in-process req/s | Redis req/s | Redis / in-process | Redis p50 ms |", "|---:|---:|---:|---:|---:|"]
        for c in step_connections:
            memory_cell, redis_cell = cells.get((STEPS, c)), cells.get((REDIS_STEPS, c))
            if memory_cell and redis_cell and memory_cell.runs and redis_cell.runs:
                lines.append(f"| {c} | {memory_cell.rps:,.0f} | {redis_cell.rps:,.0f} | "
                             f"{redis_cell.rps / memory_cell.rps:.0%} | {redis_cell.p50:.2f} |")
        top_steps, one = max(step_connections), min(step_connections)
        memory_cell, redis_cell = cells.get((STEPS, top_steps)), cells.get((REDIS_STEPS, top_steps))
        if memory_cell and redis_cell:
            share = redis_cell.rps / memory_cell.rps
            lines += ["", f"Redis-store steps at {top_steps} connections: {share:.0%} of in-process steps "
                      f"({'meets' if share >= 0.5 else 'MISSES'} the >= 50 % target)."]
        if (single := cells.get((REDIS_STEPS, one))) and one == 1:
            lines += [f"Redis-store steps at 1 connection: p50 {single.p50:.2f} ms "
                      f"({'meets' if single.p50 <= 0.8 else 'MISSES'} the <= 0.8 ms target)."]
    v2 = [(c, cells.get((V2_ROWS["http"], c)), cells.get((V2_ROWS["grpc"], c))) for c in connections]
    if any(h and g and h.runs and g.runs for _, h, g in v2):
        lines += ["", "KServe V2 infer, gRPC beside HTTP (binary tensors, the same Python asyncio client for both; "
                  "the client caps req/s, so server CPU per request is the fairer comparison):", "",
                  "| concurrency | gRPC / HTTP req/s | server CPU ms/req HTTP | gRPC |", "|---:|---:|---:|---:|"]
        for c, h, g in v2:
            if h and g and h.runs and g.runs:
                lines.append(f"| {c} | {ratio(g.rps, h.rps)} | {h.cpu_ms:.3f} | {g.cpu_ms:.3f} |")
    streams = [(c, cells.get((STREAM_ROWS["http"], c)), cells.get((STREAM_ROWS["websocket"], c)),
                cells.get((STREAM_ROWS["websocket-pipelined"], c))) for c in stream_clients]
    if any(h and w and h.runs and w.runs for _, h, w, _ in streams):
        lines += ["", "Session steps over WebSocket streams beside the HTTP step route (one session per client, one value "
                  "per step, each client waiting for its answer; the same Python asyncio client for both, so server CPU "
                  "per step is the fairer comparison):", "",
                  f"| clients | WebSocket steps/s | HTTP steps/s | WebSocket / HTTP | p50 ms WS / HTTP | server CPU ms/step WS / HTTP "
                  f"| pipelined WS ({stream_load.PIPELINE_WINDOW} in flight) steps/s | pipelined / HTTP |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for c, h, w, p in streams:
            if h and w and h.runs and w.runs:
                piped = f"{p.rps:,.0f} | {ratio(p.rps, h.rps)}" if p and p.runs else "- | -"
                lines.append(f"| {c} | {w.rps:,.0f} | {h.rps:,.0f} | {ratio(w.rps, h.rps)} | {w.p50:.2f} / {h.p50:.2f} "
                             f"| {w.cpu_ms:.3f} / {h.cpu_ms:.3f} | {piped} |")
        one = next(((h, w) for c, h, w, _ in streams if c == 1 and h and w and h.runs and w.runs), None)
        if one:
            share = one[1].rps / one[0].rps
            lines += ["", f"One client: WebSocket steps at {share:.1f}x the HTTP step route "
                      f"({'meets' if share >= 3 else 'MISSES'} the >= 3x goal; the Python client caps both)."]
    if memory:
        per = memory["bytes_per_session"]
        verdict = "meets" if per <= 1024 else "MISSES"
        lines += [
            "",
            f"Session memory (fresh lstm-serve, in-process store): VmRSS {memory['rss_before'] / 2**20:.1f} MiB -> "
            f"{memory['rss_after'] / 2**20:.1f} MiB after {memory['sessions']:,} sessions created and stepped once "
            f"({memory['seconds']:.1f} s): **{per:,.0f} bytes per session** ({verdict} the <= 1 KiB target).",
        ]
    if probabilities:
        shown = ", ".join(f"{k} {v:.6f}" for k, v in probabilities.items())
        lines += ["", f"Sanity check, probability for the benchmark body: {shown}."]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (default 10)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; cells report medians (default 3)")
    parser.add_argument("--connections", default="1,8,32", help="predict connection counts (default 1,8,32)")
    parser.add_argument("--step-connections", default="1,32", help="session-step connection counts, among --connections (default 1,32)")
    parser.add_argument("--stream-clients", default="1,64", help="WebSocket vs HTTP step clients (default 1,64)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1: leave the CPU to the server)")
    parser.add_argument("--sessions", type=int, default=256, help="sessions stepped round-robin (default 256)")
    parser.add_argument("--memory-sessions", type=int, default=10_000, help="sessions for the memory check")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0",
                        help="Redis for the Redis-store step rows (own key prefix, removed after); skipped if it does not answer")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 s runs, 1 round, 1,000 memory sessions")
    parser.add_argument(
        "--output", type=Path, default=None,
        help="Markdown output (default bench/results.md; with --peers bench/results-peers.md)",
    )
    parser.add_argument(
        "--peers", action="store_true",
        help="instead: lstm-serve against KServe, BentoML, LitServe, a hand-written FastAPI + onnxruntime endpoint "
        "and two floors (bench/peers/; one virtual environment per peer, made on first use)",
    )
    parser.add_argument(
        "--venv-cache", type=Path, default=None,
        help="where --peers keeps the peers' virtual environments (default ~/.cache/lstm-serve-bench)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.repeats = 2.0, 1
        args.memory_sessions = min(args.memory_sessions, 1000)
    if args.peers:
        if str(ROOT) not in sys.path:  # run as a script: only bench/ is on the path
            sys.path.insert(0, str(ROOT))
        from bench.peers.runner import run_peers

        return run_peers(args)
    args.output = args.output or RESULTS
    connections = [int(c) for c in args.connections.split(",")]
    step_connections = [int(c) for c in args.step_connections.split(",")]
    if not set(step_connections) <= set(connections):
        parser.error("--step-connections must be among --connections (steps run beside predict at each count)")
    stream_clients = [int(c) for c in args.stream_clients.split(",")]

    wrk = ensure_wrk()
    meta = collect_meta(wrk, args.duration, args.repeats) | {"n_sessions": str(args.sessions)}
    print(f"{meta['date']} | {meta['cpu']} x{meta['cores']} | load {meta['load']}", flush=True)

    started: list[Server] = []
    redis_prefix = f"lstm-serve-bench-{uuid.uuid4().hex[:8]}:"
    use_redis = redis_answers(args.redis_url)
    if not use_redis:
        print(f"No Redis at {args.redis_url}: skipping the Redis-store step rows", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="lstm-serve-bench-"))
    cells: dict[tuple[str, int], Cell] = {}
    memory = None
    probabilities: dict[str, float] = {}
    try:
        model_dir = tmp / "models"
        print("Training the bench model through lstm-serve's API ...", flush=True)
        keras_path = train_model(model_dir, tmp)
        print(f"  model file: {keras_path}", flush=True)

        servers: dict[str, Server] = {}
        grpc_port = free_port()
        for label, start in (
            ("lstm-serve", lambda: start_lstm_serve("lstm-serve", model_dir, tmp, GRPC_PORT=str(grpc_port))),
            ("naive", lambda: start_uvicorn("naive", "bench.naive_server:app", tmp, BENCH_MODEL_PATH=str(keras_path))),
            ("null", lambda: start_uvicorn("null", "bench.null_server:app", tmp)),
        ):
            servers[label] = start()
            started.append(servers[label])
        for server in servers.values():
            server.wait_ready()
        probabilities = check_predict_servers(servers)
        print(f"  all three answer; probabilities {probabilities}", flush=True)

        predict_lua = write_predict_script(tmp / "predict.lua", PREDICT_BODY)
        multiclass_lua = write_predict_script(tmp / "multiclass.lua", MULTICLASS_BODY)
        multiclass_url = servers["lstm-serve"].url + f"/models/{MULTICLASS_NAME}/predict"
        # The session steps: on lstm-serve (in-process store) and on a second one keeping sessions in Redis.
        steppers = {STEPS: servers["lstm-serve"]}
        if use_redis:
            steppers[REDIS_STEPS] = start_lstm_serve(
                "lstm-serve-redis", model_dir, tmp, SESSION_STORE=args.redis_url, SESSION_KEY_PREFIX=redis_prefix
            )
            started.append(steppers[REDIS_STEPS])
            steppers[REDIS_STEPS].wait_ready()
        step_lua: dict[tuple[str, int], Path] = {}
        for label, server in steppers.items():
            ids = create_sessions(server, args.sessions)
            ids_lua = tmp / f"ids-{len(step_lua)}.lua"
            ids_lua.write_text("return {" + ",".join(json.dumps(i) for i in ids) + "}\n")
            for c in step_connections:
                path = step_lua[(label, c)] = tmp / f"step-{len(step_lua)}.lua"
                path.write_text(
                    _STEP_LUA.replace("@IDS@", str(ids_lua)).replace("@BODY@", STEP_BODY)
                    .replace("@NTHREADS@", str(max(1, min(args.threads, c))))
                )

        # Sessions of their own for the stream rows (one per client), stepped by both transports in turn.
        stream_ids = create_sessions(servers["lstm-serve"], max(stream_clients))

        # Short warm-up under load (first wrk connections, JIT-ish caches, thread pools).
        for label, server in servers.items():
            run_wrk(wrk, server.url + f"/models/{MODEL_NAME}/predict", predict_lua, 8, 1, args.threads)
        for label, server in steppers.items():
            run_wrk(wrk, server.url, step_lua[(label, step_connections[-1])], step_connections[-1], 1, args.threads)

        for round_no in range(1, args.repeats + 1):
            for c in connections:
                for label, server in servers.items():
                    result = run_wrk(wrk, server.url + f"/models/{MODEL_NAME}/predict", predict_lua, c, args.duration, args.threads, server)
                    cells.setdefault((label, c), Cell(label, c)).runs.append(result)
                    print(f"  round {round_no} {label:10s} c={c:<3d} {result.rps:9.1f} req/s  p50 {result.p50_ms:7.2f} ms"
                          f"  p99 {result.p99_ms:7.2f} ms  cpu {result.cpu_ms_per_request:6.3f} ms/req  errors {result.status_errors}+{result.socket_errors}", flush=True)
                # Soon after predict at the same count: steps / predict then compares runs seconds apart, not minutes.
                steppers_now = steppers if c in step_connections else {}
                for label, server in steppers_now.items():
                    result = run_wrk(wrk, server.url, step_lua[(label, c)], c, args.duration, args.threads, server)
                    cells.setdefault((label, c), Cell(label, c)).runs.append(result)
                    print(f"  round {round_no} {label.removeprefix('lstm-serve '):10s} c={c:<3d} {result.rps:9.1f} req/s"
                          f"  p50 {result.p50_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms  cpu {result.cpu_ms_per_request:6.3f} ms/req"
                          f"  errors {result.status_errors}+{result.socket_errors}", flush=True)
                result = run_wrk(wrk, multiclass_url, multiclass_lua, c, args.duration, args.threads, servers["lstm-serve"])
                cells.setdefault((MULTICLASS_ROW, c), Cell(MULTICLASS_ROW, c)).runs.append(result)
                print(f"  round {round_no} multiclass c={c:<3d} {result.rps:9.1f} req/s  p50 {result.p50_ms:7.2f} ms"
                      f"  cpu {result.cpu_ms_per_request:6.3f} ms/req  errors {result.status_errors}+{result.socket_errors}", flush=True)
            for c in connections:
                for kind, row in V2_ROWS.items():
                    result = run_v2(kind, servers["lstm-serve"], grpc_port, c, args.duration)
                    cells.setdefault((row, c), Cell(row, c)).runs.append(result)
                    print(f"  round {round_no} {row:18s} c={c:<3d} {result.rps:9.1f} req/s  p50 {result.p50_ms:7.2f} ms"
                          f"  p99 {result.p99_ms:7.2f} ms  cpu {result.cpu_ms_per_request:6.3f} ms/req  errors {result.status_errors}", flush=True)
            for c in stream_clients:
                for kind, row in STREAM_ROWS.items():
                    result = run_stream_steps(kind, servers["lstm-serve"], stream_ids[:c], args.duration)
                    cells.setdefault((row, c), Cell(row, c)).runs.append(result)
                    print(f"  round {round_no} {row:18s} c={c:<3d} {result.rps:9.1f} req/s  p50 {result.p50_ms:7.2f} ms"
                          f"  p99 {result.p99_ms:7.2f} ms  cpu {result.cpu_ms_per_request:6.3f} ms/req  errors {result.status_errors}", flush=True)

        stop_all(started)
        print(f"Session memory: {args.memory_sessions:,} sessions on a fresh lstm-serve ...", flush=True)
        memory = measure_session_memory(model_dir, tmp, args.memory_sessions)
    finally:
        stop_all(started)
        shutil.rmtree(tmp, ignore_errors=True)
        if use_redis:
            drop_redis_keys(args.redis_url, redis_prefix)

    publish(render(cells, connections, step_connections, stream_clients, memory, meta, probabilities), args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
