"""GET/DELETE /jobs/{id}: per-epoch progress, history, cancellation and the queue."""

import time
from typing import Any

import httpx
from fastapi.testclient import TestClient

from tests.conftest import wait_for_job

HISTORY_KEYS = {"loss", "accuracy", "val_loss", "val_accuracy"}
TINY = {"sequences": [[0.1, 0.2], [0.9, 0.1, 0.0], [0.3], [0.8, 0.7]], "labels": [1, 0, 1, 0]}


def submit(client: httpx.Client, name: str, **body: Any) -> str:
    """Queue a training job (in-process app or a real replica); its id."""
    response = client.post(f"/models/{name}/train", json=body)
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "queued"
    return response.json()["job_id"]


def wait_until(client: httpx.Client, job_id: str, predicate: Any, timeout: float = 60.0) -> dict[str, Any]:
    """Poll ``GET /jobs/{id}`` until ``predicate(job)``; return that record."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        if predicate(job):
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} never reached the expected state: {job}")


def test_history_grows_per_epoch(client: TestClient) -> None:
    epochs = 4
    job_id = submit(
        client, "progress", architecture="lstm", dataset="noisy_trend", params={"units": 4},
        epochs=epochs, batch_size=32, validation_split=0.25,
    )
    snapshots = []
    while True:
        job = client.get(f"/jobs/{job_id}").json()
        snapshots.append(job)
        if job["status"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.02)
    final = snapshots[-1]
    assert final["status"] == "succeeded", final
    for job in snapshots:
        assert job["job_id"] == job_id
        assert job["kind"] == "train"
        assert job["model"] == "progress"
        assert job["epochs"] == epochs
        assert set(job["history"]) == HISTORY_KEYS
        # Every snapshot is consistent: one history entry per finished epoch.
        for key in HISTORY_KEYS:
            assert len(job["history"][key]) == job["epoch"], job
    seen = [job["epoch"] for job in snapshots]
    assert seen == sorted(seen)
    assert any(0 < e < epochs for e in seen), f"never saw a job mid-way: {seen}"
    # Earlier epochs' values never change once published.
    for job in snapshots:
        for key in HISTORY_KEYS:
            assert job["history"][key] == final["history"][key][: job["epoch"]]
    assert final["epoch"] == epochs
    assert final["version"] == 1
    assert final["error"] is None
    assert final["started_at"] and final["finished_at"] and final["created_at"]
    for key in HISTORY_KEYS:
        assert len(final["history"][key]) == epochs
    assert all(0.0 <= a <= 1.0 for a in final["history"]["accuracy"] + final["history"]["val_accuracy"])
    # The stored version's metrics are the last epoch's values.
    metrics = client.get("/models/progress").json()["metrics"]
    assert metrics == {key: values[-1] for key, values in final["history"].items()}

    # A finished job cannot be cancelled.
    response = client.delete(f"/jobs/{job_id}")
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "job_not_cancellable"
    assert error["details"]["status"] == "succeeded"
    assert client.get(f"/jobs/{job_id}").json()["status"] == "succeeded"


def test_no_validation_history_without_a_split_and_cancel_keeps_versions(client: TestClient) -> None:
    job_id = submit(client, "noval", data=TINY, params={"units": 4}, epochs=2, validation_split=0.0)
    job = wait_for_job(client, job_id)
    assert job["status"] == "succeeded", job
    assert len(job["history"]["loss"]) == 2
    assert len(job["history"]["accuracy"]) == 2
    assert job["history"]["val_loss"] == []
    assert job["history"]["val_accuracy"] == []
    before = client.get("/models/noval").json()
    assert set(before["metrics"]) == {"loss", "accuracy"}

    # Cancelling a later training of the same model leaves its existing versions as they were.
    job_id = submit(client, "noval", architecture="lstm", dataset="noisy_trend", params={"units": 4},
                    epochs=200, batch_size=32)
    wait_until(client, job_id, lambda job: job["status"] == "running")
    assert client.delete(f"/jobs/{job_id}").status_code == 200
    assert wait_for_job(client, job_id)["status"] == "cancelled"
    assert client.get("/models/noval").json() == before
    assert before["versions"] == [1]


def test_cancel_running_and_queued_jobs(app_client: Any) -> None:
    client = app_client(max_queued_jobs=1)
    long = {"architecture": "lstm", "dataset": "noisy_trend", "params": {"units": 4}, "epochs": 200, "batch_size": 32}
    running_id = submit(client, "cancelled", **long)
    wait_until(client, running_id, lambda job: job["status"] == "running")
    queued_id = submit(client, "never", **long)
    assert client.get(f"/jobs/{queued_id}").json()["status"] == "queued"

    # One job waits already: the queue is full.
    full = client.post("/models/other/train", json=long)
    assert full.status_code == 429
    assert full.json()["error"]["code"] == "capacity_exceeded"
    assert full.json()["error"]["details"]["limit"] == 1

    # A queued job is cancelled at once and never starts.
    response = client.delete(f"/jobs/{queued_id}")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"

    # A running job stops at its next batch.
    wait_until(client, running_id, lambda job: job["epoch"] >= 1)
    response = client.delete(f"/jobs/{running_id}")
    assert response.status_code == 200
    assert response.json()["job_id"] == running_id
    assert response.json()["status"] in ("running", "cancelled")
    job = wait_for_job(client, running_id, timeout=30)
    assert job["status"] == "cancelled"
    assert job["version"] is None
    assert job["error"] is None
    assert 1 <= job["epoch"] < 200
    assert len(job["history"]["loss"]) == job["epoch"]

    queued = client.get(f"/jobs/{queued_id}").json()
    assert queued["status"] == "cancelled"
    assert queued["started_at"] is None
    assert queued["epoch"] == 0

    # No version was created by either job.
    assert client.get("/models/cancelled").status_code == 404
    assert client.get("/models/never").status_code == 404
    assert client.get("/models").json() == []
    for job_id in (running_id, queued_id):
        again = client.delete(f"/jobs/{job_id}")
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "job_not_cancellable"
        assert again.json()["error"]["details"]["status"] == "cancelled"
