"""The scaled-out topology of docker-compose.yml and deploy/kubernetes, run by hand: two API replicas and a
training worker (``lstm-serve worker``) sharing the real Redis (a key prefix of their own) and one model
folder, and a round-robin front door.

Proved here: a job runs on the worker, never on a replica; another replica follows its per-epoch progress,
lists it and cancels it; MAX_QUEUED_JOBS holds across replicas; SIGTERM to the worker ends its job as
``interrupted``, and ``kill -9`` as ``worker_lost``, with no version written; sessions stepped through the
front door move between replicas and keep their state.
"""

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.process import ServiceProcess, WorkerProcess, process_factory, service_env, versions_on_disk
from tests.test_jobs import submit as submit_job
from tests.test_jobs import wait_until
from tests.proxy import RoundRobinProxy

pytestmark = pytest.mark.e2e

REDIS_URL = "redis://127.0.0.1:6379/0"
HEARTBEAT_TIMEOUT_S = 3.0
MAX_QUEUED_JOBS = 2
#: Long enough to be caught running (800 sequences, 20 batches an epoch), never left to finish.
LONG = {"architecture": "lstm", "dataset": "noisy_trend", "epochs": 200, "params": {"units": 4}}
SHORT = {"architecture": "lstm", "dataset": "noisy_trend", "epochs": 2, "params": {"units": 4}}
FINISHED = ("succeeded", "failed", "cancelled")


@dataclass
class Cluster:
    api_1: ServiceProcess
    api_2: ServiceProcess
    worker: WorkerProcess
    model_dir: Path
    workdir: Path
    env: dict[str, str]

    def start_worker(self, name: str) -> WorkerProcess:
        self.worker = WorkerProcess(self.workdir, self.env, name)
        return self.worker


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("workers")
    workdir = root / "cwd"
    workdir.mkdir()
    start, started = process_factory(workdir)
    prefix = f"lstm-serve-e2e-{uuid.uuid4().hex}:"
    shared = {
        "SESSION_STORE": REDIS_URL,
        "JOB_QUEUE": REDIS_URL,
        "SESSION_KEY_PREFIX": prefix,
        "JOB_HEARTBEAT_TIMEOUT_S": str(HEARTBEAT_TIMEOUT_S),
        "MAX_QUEUED_JOBS": str(MAX_QUEUED_JOBS),
        "DEMO_MODEL": "false",
    }
    model_dir = root / "models"
    cluster = None
    try:
        api_1 = start(model_dir, "api-1", **shared)
        api_2 = start(model_dir, "api-2", **shared)
        worker_env = service_env(model_dir, **shared)
        cluster = Cluster(api_1, api_2, WorkerProcess(workdir, worker_env, "worker-1"), model_dir, workdir, worker_env)
        api_1.wait_ready()
        api_2.wait_ready()
        yield cluster
    finally:
        for service in started:
            service.kill()
        if cluster is not None:
            cluster.worker.kill()
        client = redis.Redis.from_url(REDIS_URL)
        job_ids = [i.decode() for i in client.zrange(f"{prefix}jobs", 0, -1)]
        keys = [*client.scan_iter(f"{prefix}*"), *client.scan_iter(f"rq:*{prefix}*")]
        keys += [f"rq:job:{job_id}" for job_id in job_ids]
        if keys:
            client.delete(*keys)


def submit(api: ServiceProcess, name: str, body: dict[str, Any]) -> str:
    return submit_job(api.http, name, **body)


def wait_for(api: ServiceProcess, job_id: str, done: Any, timeout: float = 120.0) -> dict[str, Any]:
    return wait_until(api.http, job_id, done, timeout)


def test_job_runs_on_the_worker_and_its_model_is_served_by_both_replicas(cluster: Cluster) -> None:
    job_id = submit(cluster.api_1, "queued-short", SHORT)
    job = wait_for(cluster.api_2, job_id, lambda j: j["status"] in FINISHED)
    assert job["status"] == "succeeded", job
    assert job["owner"] == cluster.worker.owner, "the worker trained it, not a replica"
    assert job["version"] == 1 and job["epoch"] == 2 and len(job["history"]["loss"]) == 2
    assert versions_on_disk(cluster.model_dir, "queued-short") == ["1"]
    sequences = {"sequences": [[0.1, 0.2, 0.3], [0.9, 0.5, 0.1]]}
    first = cluster.api_1.http.post("/models/queued-short/predict", json=sequences)
    second = cluster.api_2.http.post("/models/queued-short/predict", json=sequences)
    assert first.status_code == 200 and first.json() == second.json()
    assert first.json()["version"] == 1


def test_progress_followed_and_cancel_issued_from_the_other_replica(cluster: Cluster) -> None:
    job_id = submit(cluster.api_1, "queued-cancel", LONG)
    running = wait_for(cluster.api_2, job_id, lambda j: j["status"] == "running" and j["epoch"] >= 2)
    assert running["owner"] == cluster.worker.owner
    assert len(running["history"]["loss"]) == running["epoch"]
    later = wait_for(cluster.api_2, job_id, lambda j: j["epoch"] > running["epoch"])
    assert later["history"]["loss"][: running["epoch"]] == running["history"]["loss"], "progress only grows"
    assert job_id in [job["job_id"] for job in cluster.api_2.http.get("/jobs").json()]

    response = cluster.api_2.http.delete(f"/jobs/{job_id}")
    assert response.status_code == 200, response.text
    cancelled = wait_for(cluster.api_1, job_id, lambda j: j["status"] in FINISHED, timeout=30)
    assert cancelled["status"] == "cancelled", cancelled
    assert cancelled["epoch"] < LONG["epochs"] and cancelled["version"] is None
    assert versions_on_disk(cluster.model_dir, "queued-cancel") == []
    again = cluster.api_1.http.delete(f"/jobs/{job_id}")
    assert again.status_code == 409 and again.json()["error"]["code"] == "job_not_cancellable"


def test_queued_jobs_cap_holds_across_replicas(cluster: Cluster) -> None:
    busy = submit(cluster.api_1, "queued-busy", LONG)
    wait_for(cluster.api_1, busy, lambda j: j["status"] == "running")  # running jobs do not count
    accepted = [submit(api, f"queued-cap-{i}", SHORT) for i, api in enumerate((cluster.api_1, cluster.api_2))]
    assert len(accepted) == MAX_QUEUED_JOBS
    for api in (cluster.api_1, cluster.api_2):
        refused = api.http.post("/models/queued-cap-x/train", json=SHORT)
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["details"]["limit"] == MAX_QUEUED_JOBS

    # A queued job cancelled on the other replica ends at once and frees its place.
    cancelled = cluster.api_2.http.delete(f"/jobs/{accepted[0]}").json()
    assert cancelled["status"] == "cancelled"
    accepted.append(submit(cluster.api_2, "queued-cap-2", SHORT))
    for job_id in [*accepted[1:], busy]:
        cluster.api_1.http.delete(f"/jobs/{job_id}")
    for job_id in [*accepted, busy]:
        assert wait_for(cluster.api_2, job_id, lambda j: j["status"] in FINISHED)["status"] == "cancelled"
    assert versions_on_disk(cluster.model_dir, "queued-cap-0") == []


def test_sigterm_interrupts_the_job_and_kill_9_loses_it_without_a_half_version(cluster: Cluster) -> None:
    # SIGTERM (a rolling update, a scale-down): the job stops at its next batch, the worker exits cleanly.
    job_id = submit(cluster.api_1, "queued-term", LONG)
    wait_for(cluster.api_2, job_id, lambda j: j["status"] == "running" and j["epoch"] >= 1)
    started = time.monotonic()
    assert cluster.worker.terminate() == 0, cluster.worker.log_tail()
    assert time.monotonic() - started < 20
    job = cluster.api_2.http.get(f"/jobs/{job_id}").json()
    assert job["status"] == "failed" and job["error"]["code"] == "interrupted", job
    assert versions_on_disk(cluster.model_dir, "queued-term") == []

    # kill -9 (a node lost, OOM): no one reports; the heartbeat expires and any replica fails the job.
    worker = cluster.start_worker("worker-2")
    job_id = submit(cluster.api_2, "queued-kill", LONG)
    running = wait_for(cluster.api_1, job_id, lambda j: j["status"] == "running" and j["epoch"] >= 1)
    assert running["owner"] == worker.owner
    worker.kill()
    killed_at = time.monotonic()
    lost = wait_for(cluster.api_1, job_id, lambda j: j["status"] in FINISHED, timeout=HEARTBEAT_TIMEOUT_S + 20)
    assert lost["status"] == "failed" and lost["error"]["code"] == "worker_lost", lost
    assert time.monotonic() - killed_at < HEARTBEAT_TIMEOUT_S + 5
    assert cluster.api_2.http.get(f"/jobs/{job_id}").json() == lost
    # Nothing half-written is visible: no version folder (a version is renamed into place only when complete).
    assert [v for v in versions_on_disk(cluster.model_dir, "queued-kill") if not v.startswith(".")] == []

    # A new worker takes new jobs; the lost one stays failed (no retry that could write a second version).
    cluster.start_worker("worker-3")
    fresh = submit(cluster.api_1, "queued-after", SHORT)
    assert wait_for(cluster.api_2, fresh, lambda j: j["status"] in FINISHED)["status"] == "succeeded"
    assert cluster.api_2.http.get(f"/jobs/{job_id}").json()["status"] == "failed"


def test_sessions_stepped_through_the_front_door_move_between_replicas(cluster: Cluster) -> None:
    """Every request on a new connection through the round-robin proxy: consecutive steps land on
    alternate replicas and give exactly the probabilities of the same steps on one replica."""
    job_id = submit(cluster.api_1, "front-door", SHORT)
    assert wait_for(cluster.api_1, job_id, lambda j: j["status"] in FINISHED)["status"] == "succeeded"
    values = [0.1, -0.4, 0.9, 0.3, -1.2, 0.5]
    alone = cluster.api_1.http.post("/models/front-door/sessions").json()["session_id"]
    expected = [
        cluster.api_1.http.post(f"/sessions/{alone}/step", json={"values": [v]}).json()["probability"] for v in values
    ]
    with RoundRobinProxy([cluster.api_1.port, cluster.api_2.port]) as proxy:

        def through_door(method: str, path: str, **kwargs: Any) -> httpx.Response:
            with httpx.Client(base_url=proxy.url, timeout=30) as http:  # a new connection each time
                return http.request(method, path, **kwargs)

        session_id = through_door("POST", "/models/front-door/sessions").json()["session_id"]
        stepped = []
        for i, value in enumerate(values):
            response = through_door("POST", f"/sessions/{session_id}/step", json={"values": [value]})
            assert response.status_code == 200, response.text
            assert response.json()["steps_seen"] == i + 1
            stepped.append(response.json()["probability"])
        assert through_door("DELETE", f"/sessions/{session_id}").status_code == 204
        assert proxy.connections[cluster.api_1.port] == proxy.connections[cluster.api_2.port] == 4
    assert stepped == pytest.approx(expected, abs=1e-6)
