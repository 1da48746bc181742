"""A bounded mixed-load test against a real server on loopback (not a pytest test).

For ``--seconds`` (default 60): predict clients, session-step clients and one client that now and then
trains a new version, all at once against one ``python -m service`` process on a temporary MODEL_DIR.
Counts requests and errors per kind, latency percentiles, and samples the server's RSS (VmRSS) after
warm-up and at the end. Prints a small table; ``run()`` returns the numbers (the smoke test uses it).
With ``--worker`` the training runs in an ``lstm-serve worker`` process fed through the real Redis
(``JOB_QUEUE``, a key prefix of its own) instead of in the server; ``--compare`` runs both, one after the
other, and prints the predictions' p99 of each. ``--retrains N`` instead retrains the model N times back
to back under the same load and samples RSS once each new version answers: the figure for memory staying
bounded (``MAX_LOADED_VERSIONS``) is RSS after the Nth retrain against RSS after the first.

    .venv/bin/python -m bench.load_mixed --seconds 60
    .venv/bin/python -m bench.load_mixed --seconds 60 --compare
    .venv/bin/python -m bench.load_mixed --retrains 20
"""

import argparse
import random
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uuid

import httpx
import redis

from tests.process import ServiceProcess, WorkerProcess, service_env

REDIS_URL = "redis://127.0.0.1:6379/0"

MODEL = "load"
TRAIN = {"architecture": "lstm", "dataset": "noisy_trend", "epochs": 1, "params": {"units": 8}}


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, started: float, error: str | None) -> None:
        with self.lock:
            self.latencies.append(time.perf_counter() - started)
            if error:
                self.errors.append(error)


def _predictor(url: str, stop: threading.Event, tally: Tally, seed: int) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=url, timeout=30) as http:
        while not stop.is_set():
            batch = [[round(rng.uniform(-1, 1), 3) for _ in range(rng.randint(1, 30))] for _ in range(rng.randint(1, 32))]
            started = time.perf_counter()
            try:
                response = http.post(f"/models/{MODEL}/predict", json={"sequences": batch})
                ok = response.status_code == 200 and len(response.json()["predictions"]) == len(batch)
                tally.record(started, None if ok else f"{response.status_code} {response.text[:120]}")
            except httpx.HTTPError as exc:
                tally.record(started, repr(exc))


def _stepper(url: str, stop: threading.Event, tally: Tally, seed: int) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=url, timeout=30) as http:
        session_id, steps = None, 0
        while not stop.is_set():
            started = time.perf_counter()
            try:
                if session_id is None or steps >= 50:
                    if session_id is not None:
                        http.delete(f"/sessions/{session_id}")
                    response = http.post(f"/models/{MODEL}/sessions")
                    ok = response.status_code == 201
                    session_id, steps = (response.json()["session_id"], 0) if ok else (None, 0)
                else:
                    values = [round(rng.uniform(-1, 1), 3) for _ in range(rng.randint(1, 3))]
                    response = http.post(f"/sessions/{session_id}/step", json={"values": values})
                    ok = response.status_code == 200 and response.json()["steps_seen"] == steps + len(values)
                    steps += len(values)
                tally.record(started, None if ok else f"{response.status_code} {response.text[:120]}")
            except httpx.HTTPError as exc:
                tally.record(started, repr(exc))


def _train_once(http: httpx.Client, tally: Tally) -> bool:
    """One training job, waited for; whether it succeeded."""
    started = time.perf_counter()
    try:
        response = http.post(f"/models/{MODEL}/train", json=TRAIN)
        if response.status_code != 202:
            tally.record(started, f"{response.status_code} {response.text[:120]}")
            return False
        job_id = response.json()["job_id"]
        while (job := http.get(f"/jobs/{job_id}").json())["status"] in ("queued", "running"):
            time.sleep(0.2)
        tally.record(started, None if job["status"] == "succeeded" else f"job {job['status']}: {job['error']}")
        return job["status"] == "succeeded"
    except httpx.HTTPError as exc:
        tally.record(started, repr(exc))
        return False


def _trainer(url: str, stop: threading.Event, tally: Tally, every_s: float) -> None:
    with httpx.Client(base_url=url, timeout=30) as http:
        while not stop.wait(every_s):
            _train_once(http, tally)


def _retrainer(url: str, tally: Tally, count: int, pid: int, rss_after: list[float]) -> None:
    """Retrain ``count`` times back to back; after each, once the new version has answered, sample RSS."""
    with httpx.Client(base_url=url, timeout=30) as http:
        for _ in range(count):
            if _train_once(http, tally):
                http.post(f"/models/{MODEL}/predict", json={"sequences": [[0.5]]})  # the new version is loaded
            rss_after.append(rss_mib(pid))


def run(
    seconds: float = 60.0,
    predictors: int = 4,
    steppers: int = 3,
    train_every_s: float = 15.0,
    worker: bool = False,
    retrains: int | None = None,
) -> dict[str, Any]:
    """Start a server (and with ``worker`` a training worker), warm it up, run the mixed load for ``seconds``
    (with ``retrains``: until that many retrains are done); return per-kind numbers and RSS."""
    rss_after: list[float] = []
    prefix = f"lstm-serve-bench-{uuid.uuid4().hex}:"
    queue = {"JOB_QUEUE": REDIS_URL, "SESSION_KEY_PREFIX": prefix} if worker else {}
    with tempfile.TemporaryDirectory(prefix="lstm-serve-load-") as tmp:
        root = Path(tmp)
        (root / "cwd").mkdir()
        env = service_env(root / "models", DEMO_MODEL="false", LOG_LEVEL="warning", **queue)
        server = ServiceProcess(root / "cwd", env, "load")
        trainer = WorkerProcess(root / "cwd", env, "worker") if worker else None
        try:
            server.wait_ready()
            server.train(MODEL, **TRAIN)
            for _ in range(20):  # warm-up
                server.predict(MODEL)
            rss_start = rss_mib(server.process.pid)
            stop = threading.Event()
            tallies = {"predict": Tally(), "session": Tally(), "train": Tally()}
            threads = [threading.Thread(target=_predictor, args=(server.url, stop, tallies["predict"], i)) for i in range(predictors)]
            threads += [threading.Thread(target=_stepper, args=(server.url, stop, tallies["session"], 100 + i)) for i in range(steppers)]
            if retrains is None:
                threads.append(threading.Thread(target=_trainer, args=(server.url, stop, tallies["train"], train_every_s)))
            else:
                retrainer = threading.Thread(
                    target=_retrainer, args=(server.url, tallies["train"], retrains, server.process.pid, rss_after)
                )
                threads.append(retrainer)
            started = time.monotonic()
            for thread in threads:
                thread.start()
            if retrains is None:
                time.sleep(seconds)
            else:
                retrainer.join()
            stop.set()
            for thread in threads:
                thread.join(120)
            elapsed = time.monotonic() - started
            rss_end = rss_mib(server.process.pid)
            versions = server.http.get(f"/models/{MODEL}").json()["versions"]
            alive = server.process.poll() is None
        finally:
            server.kill()
            if trainer is not None:
                trainer.kill()
                client = redis.Redis.from_url(REDIS_URL)
                keys = list(client.scan_iter(f"{prefix}*")) + list(client.scan_iter(f"rq:*{prefix}*"))
                if keys:
                    client.delete(*keys)
    kinds = {}
    for kind, tally in tallies.items():
        lat = sorted(tally.latencies) or [0.0]
        kinds[kind] = {
            "requests": len(tally.latencies),
            "errors": len(tally.errors),
            "per_s": len(tally.latencies) / elapsed,
            "p50_ms": 1000 * statistics.median(lat),
            "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))],
            "first_errors": tally.errors[:3],
        }
    return {"seconds": elapsed, "kinds": kinds, "rss_start_mib": rss_start, "rss_end_mib": rss_end,
            "versions": versions, "server_alive": alive, "training": "worker" if worker else "in-process",
            "rss_after_retrains_mib": rss_after}


def print_table(result: dict[str, Any]) -> None:
    print(f"mixed load for {result['seconds']:.1f} s on loopback, training {result['training']}; "
          f"model versions at the end: {result['versions']}")
    print(f"{'kind':<8} {'requests':>9} {'errors':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for kind, row in result["kinds"].items():
        print(f"{kind:<8} {row['requests']:>9} {row['errors']:>7} {row['per_s']:>8.1f} {row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f}")
        for error in row["first_errors"]:
            print(f"    {error}")
    growth = result["rss_end_mib"] - result["rss_start_mib"]
    print(f"server RSS: {result['rss_start_mib']:.1f} MiB after warm-up -> {result['rss_end_mib']:.1f} MiB at end ({growth:+.1f} MiB)")
    samples = result["rss_after_retrains_mib"]
    if samples:
        print(f"server RSS after retrain 1: {samples[0]:.1f} MiB, after retrain {len(samples)}: {samples[-1]:.1f} MiB "
              f"({samples[-1] - samples[0]:+.1f} MiB); every retrain: {', '.join(f'{s:.0f}' for s in samples)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--predictors", type=int, default=4)
    parser.add_argument("--steppers", type=int, default=3)
    parser.add_argument("--train-every", type=float, default=15.0)
    parser.add_argument("--retrains", type=int, metavar="N", help="retrain N times under load (instead of --seconds) "
                        "and report RSS after the first and the Nth")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--worker", action="store_true", help="train in an lstm-serve worker via Redis")
    where.add_argument("--compare", action="store_true", help="run in-process, then with a worker")
    args = parser.parse_args()
    modes = [False, True] if args.compare else [args.worker]
    results = [
        run(args.seconds, args.predictors, args.steppers, args.train_every, worker=mode, retrains=args.retrains)
        for mode in modes
    ]
    for result in results:
        print_table(result)
    if args.compare:
        print("predictions p99 ms: " + ", ".join(
            f"training {r['training']} {r['kinds']['predict']['p99_ms']:.1f}" for r in results
        ))


if __name__ == "__main__":
    main()
