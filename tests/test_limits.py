"""Server limits: job queue depth (MAX_QUEUED_JOBS → 429), training time (MAX_TRAIN_SECONDS → the job fails
with training_time_exceeded and stores nothing), values per session step. The per-request sequence cap is
in test_bad_input; graceful shutdown under load in tests/e2e/test_crash_safety."""

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import wait_for_job
from tests.test_validation import assert_error

LONG = {"architecture": "lstm", "dataset": "noisy_trend", "epochs": 200, "params": {"units": 8}}
SHORT = {"architecture": "lstm", "dataset": "noisy_trend", "epochs": 1, "params": {"units": 2}}


def wait_status(client: TestClient, job_id: str, status: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        if job["status"] == status:
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} never {status}: {job}")


def test_job_queue_depth_cap(app_client: Callable[..., TestClient]) -> None:
    client = app_client(max_queued_jobs=2)
    running = client.post("/models/q/train", json=LONG).json()["job_id"]
    wait_status(client, running, "running")
    queued = [client.post(f"/models/q{i}/train", json=SHORT) for i in range(2)]
    assert [r.status_code for r in queued] == [202, 202]
    assert all(r.json()["status"] == "queued" for r in queued)

    for body, path in ((SHORT, "/models/q9/train"), ({"dataset": "noisy_trend", "epochs": 1}, "/compare")):
        error = assert_error(client.post(path, json=body), 429, "capacity_exceeded")
        assert error["details"]["limit"] == 2
        assert "queued" in error["message"]

    # Cancelling a queued job frees its place at once.
    assert client.delete(f"/jobs/{queued[0].json()['job_id']}").json()["status"] == "cancelled"
    again = client.post("/models/q9/train", json=SHORT)
    assert again.status_code == 202, again.text
    for job_id in (running, queued[1].json()["job_id"], again.json()["job_id"]):
        client.delete(f"/jobs/{job_id}")
    assert wait_for_job(client, running)["status"] == "cancelled"
    assert client.get("/models").json() == []


def test_training_time_cap(app_client: Callable[..., TestClient]) -> None:
    client = app_client(max_train_seconds=0.3)
    started = time.monotonic()
    job_id = client.post("/models/slow/train", json=LONG).json()["job_id"]
    job = wait_for_job(client, job_id, timeout=60)
    assert time.monotonic() - started < 30
    assert job["status"] == "failed", job
    assert job["error"]["code"] == "training_time_exceeded"
    assert "MAX_TRAIN_SECONDS" in job["error"]["message"]
    assert job["error"]["details"]["limit_s"] == 0.3
    assert job["epoch"] < 200 and job["version"] is None
    assert_error(client.get("/models/slow"), 404, "model_not_found")

    # Under the cap, training works as usual.
    client_2 = app_client(max_train_seconds=120)
    job = wait_for_job(client_2, client_2.post("/models/fast/train", json=SHORT).json()["job_id"])
    assert job["status"] == "succeeded", job


def test_training_time_cap_setting_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from service.config import get_settings

    monkeypatch.setenv("MAX_TRAIN_SECONDS", "2.5")
    assert get_settings().max_train_seconds == 2.5
    monkeypatch.delenv("MAX_TRAIN_SECONDS")
    assert get_settings().max_train_seconds is None


def test_step_values_cap(trained: TestClient) -> None:
    session_id = trained.post("/models/m-lstm/sessions").json()["session_id"]
    try:
        response = trained.post(f"/sessions/{session_id}/step", json={"values": [0.0] * 100_001})
        error = assert_error(response, 422, "validation_error", "values")
        assert trained.get(f"/sessions/{session_id}").json()["steps_seen"] == 0
        response = trained.post(f"/sessions/{session_id}/step", json={"values": [0.0] * 2000})
        assert response.status_code == 200 and response.json()["steps_seen"] == 2000
        del error
    finally:
        trained.delete(f"/sessions/{session_id}")


def test_model_size_cap(app_client: Callable[..., TestClient]) -> None:
    client = app_client(max_model_params=100_000)
    big = {"architecture": "embedding_lstm", "dataset": "token_pattern", "params": {"vocab_size": 100_000, "embedding_dim": 64}}
    response = client.post("/models/big/train", json=big)
    error = assert_error(response, 422, "invalid_input", "params")
    assert error["details"]["got"] > 100_000
    compare = client.post("/compare", json={"dataset": "token_pattern", "params": {"vocab_size": 100_000}})
    assert_error(compare, 422, "invalid_input", "params")
    assert client.get("/models").json() == [] and client.get("/jobs").json() == []
