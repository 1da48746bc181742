"""The service as a real process, started exactly as the Dockerfile's CMD starts it (``python -m service``,
configured only through the environment): readiness, the demo model, training over HTTP, a clean
shutdown on SIGTERM, models served again after a restart, two replicas on one model folder (the
docker-compose topology) and the API key."""

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.process import SEQUENCES, STOP_TIMEOUT_S, ServiceProcess, Start, drop_redis_keys, process_factory
from tests.test_deploy import dockerfile_healthcheck

pytestmark = pytest.mark.e2e

REDIS_URL = "redis://127.0.0.1:6379/0"


def assert_predictions(result: dict[str, Any], name: str, count: int) -> None:
    assert result["model"] == name
    assert len(result["predictions"]) == count
    for prediction in result["predictions"]:
        assert 0.0 <= prediction["probability"] <= 1.0
        assert prediction["label"] == int(prediction["probability"] >= 0.5)


def test_serves_trains_stops_cleanly_and_restarts_with_the_same_models(start_service: Start, tmp_path: Path) -> None:
    model_dir = tmp_path / "models"
    first = start_service(model_dir, "first")
    first.wait_ready()
    assert first.http.get("/health/live").json() == {"status": "ok"}

    # The image's HEALTHCHECK command passes against the running service.
    check = dockerfile_healthcheck()
    healthcheck = subprocess.run(
        [sys.executable, *check[1:]], env={**os.environ, "PORT": str(first.port)}, capture_output=True, timeout=30
    )
    assert healthcheck.returncode == 0, healthcheck.stderr

    # The demo model was trained at first start and predicts.
    assert "demo" in [model["name"] for model in first.http.get("/models").json()]
    demo = first.http.get("/models/demo").json()
    assert demo["versions"] == [1]
    demo_predictions = first.predict("demo")
    assert_predictions(demo_predictions, "demo", len(SEQUENCES))

    # A small model trained over HTTP.
    job = first.train("e2e", architecture="lstm", dataset="noisy_trend", epochs=2, params={"units": 4})
    assert job["model"] == "e2e" and job["version"] == 1 and len(job["history"]["loss"]) == 2
    # No JOB_QUEUE: the embedded default trains in the serving process itself, nothing else to start.
    assert job["owner"].endswith(f":{first.process.pid}")
    trained = first.predict("e2e")
    assert_predictions(trained, "e2e", len(SEQUENCES))
    assert trained["version"] == 1
    assert first.http.get("/metrics").status_code == 200

    # docker stop: SIGTERM, graceful shutdown, exit status 0.
    started = time.monotonic()
    assert first.terminate() == 0, first.log_tail()
    assert time.monotonic() - started < STOP_TIMEOUT_S
    assert "Application shutdown complete" in first.log_path.read_text()

    # A new process on the same MODEL_DIR serves the same models, and does not train the demo again.
    second = start_service(model_dir, "second")
    second.wait_ready()
    again = second.http.get("/models/demo").json()
    assert again["created_at"] == demo["created_at"]
    assert again["versions"] == [1]
    assert sorted(p.name for p in (model_dir / "demo").iterdir() if not p.name.startswith(".")) == ["1"]
    assert second.predict("e2e") == trained
    assert second.predict("demo") == demo_predictions
    assert second.terminate() == 0, second.log_tail()


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServiceProcess, ServiceProcess]]:
    """Two processes on one MODEL_DIR sharing sessions in the real Redis, started as docker-compose starts
    api-1 and api-2 (api-2 once api-1 is healthy). The Redis keys live under a prefix of their own."""
    root = tmp_path_factory.mktemp("replicas")
    workdir = root / "cwd"
    workdir.mkdir()
    start, started = process_factory(workdir)
    prefix = f"lstm-serve-e2e-{uuid.uuid4().hex}:"
    shared = {"SESSION_STORE": REDIS_URL, "SESSION_KEY_PREFIX": prefix}
    try:
        api_1 = start(root / "models", "api-1", **shared)
        api_1.wait_ready()
        api_2 = start(root / "models", "api-2", **shared)
        api_2.wait_ready()
        yield api_1, api_2
    finally:
        for service in started:
            service.kill()
        drop_redis_keys(REDIS_URL, prefix)


def test_second_replica_serves_the_demo_model_of_the_first(replicas: tuple[ServiceProcess, ServiceProcess]) -> None:
    api_1, api_2 = replicas
    demo_1 = api_1.http.get("/models/demo").json()
    demo_2 = api_2.http.get("/models/demo").json()
    assert demo_2["created_at"] == demo_1["created_at"] and demo_2["versions"] == [1]
    assert api_2.predict("demo") == api_1.predict("demo")


def test_model_trained_on_one_replica_is_served_by_the_other(replicas: tuple[ServiceProcess, ServiceProcess]) -> None:
    api_1, api_2 = replicas
    api_1.train("shared", architecture="lstm", dataset="noisy_trend", epochs=1, params={"units": 4})
    response = api_2.http.get("/models/shared")
    assert response.status_code == 200, response.text
    assert api_2.predict("shared") == api_1.predict("shared")


def test_session_continues_across_replicas(replicas: tuple[ServiceProcess, ServiceProcess]) -> None:
    """A step sent to replica A and the next to replica B continue the same state."""
    api_1, api_2 = replicas
    values = [0.1, -0.4, 0.9, 0.3, -1.2, 0.5]
    alone = api_1.http.post("/models/demo/sessions").json()["session_id"]
    expected = [api_1.http.post(f"/sessions/{alone}/step", json={"values": [v]}).json()["probability"] for v in values]

    session_id = api_2.http.post("/models/demo/sessions").json()["session_id"]
    handed_over = []
    for i, value in enumerate(values):
        replica = (api_1, api_2)[i % 2]
        response = replica.http.post(f"/sessions/{session_id}/step", json={"values": [value]})
        assert response.status_code == 200, response.text
        assert response.json()["steps_seen"] == i + 1
        handed_over.append(response.json()["probability"])
    assert handed_over == pytest.approx(expected, abs=1e-6)
    assert api_1.http.get(f"/sessions/{session_id}").json()["steps_seen"] == len(values)
    assert api_2.http.delete(f"/sessions/{session_id}").status_code == 204
    assert api_1.http.get(f"/sessions/{session_id}").status_code == 404


def test_job_of_one_replica_is_readable_on_the_other(replicas: tuple[ServiceProcess, ServiceProcess]) -> None:
    api_1, api_2 = replicas
    job = api_1.train("jobs-shared", architecture="lstm", dataset="noisy_trend", epochs=1, params={"units": 4})
    seen = api_2.http.get(f"/jobs/{job['job_id']}").json()
    assert seen["status"] == "succeeded" and seen["version"] == job["version"]


def test_api_key_guards_training_in_the_real_process(start_service: Start, tmp_path: Path) -> None:
    service = start_service(tmp_path / "models", "api-key", API_KEY="secret", DEMO_MODEL="false")
    service.wait_ready()
    body = {"architecture": "lstm", "dataset": "noisy_trend", "epochs": 1, "params": {"units": 4}}

    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "secret"}):
        response = service.http.post("/models/x/train", json=body, headers=headers)
        assert response.status_code == 401, response.text
        assert response.headers["content-type"].startswith("application/json")
        error = response.json()["error"]
        assert error["code"] == "unauthorized"
        assert isinstance(error["message"], str) and error["message"]
        assert isinstance(error["details"], dict)
    assert service.http.get("/models").json() == []  # nothing was trained; reads stay open

    job = service.train("x", headers={"Authorization": "Bearer secret"}, **body)
    assert job["version"] == 1
    assert_predictions(service.predict("x"), "x", len(SEQUENCES))
    assert service.terminate() == 0, service.log_tail()
