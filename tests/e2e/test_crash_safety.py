"""Crash safety with real processes: ``kill -9`` while a job trains and while a version is being saved leaves
every earlier version loadable and the store consistent after a restart; SIGTERM while a prediction and a
training job are in flight finishes the prediction, cancels the job, leaves no half version and exits 0."""

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.process import SEQUENCES, ServiceProcess, Start, versions_on_disk

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

NAME = "crashy"
SMALL = {"architecture": "lstm", "dataset": "noisy_trend", "params": {"units": 4}}
#: Long enough to be killed in the middle of.
LONG = {**SMALL, "epochs": 200}


def start(start_service: Start, model_dir: Path, label: str, **env: str) -> ServiceProcess:
    service = start_service(model_dir, label, DEMO_MODEL="false", **env)
    service.wait_ready()
    return service


def submit(service: ServiceProcess, **body: Any) -> str:
    response = service.http.post(f"/models/{NAME}/train", json=body)
    assert response.status_code == 202, response.text
    return response.json()["job_id"]


def wait_until(predicate: Any, timeout: float, what: str, poll: float = 0.01) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")


def kill_9(service: ServiceProcess) -> None:
    service.process.send_signal(signal.SIGKILL)
    assert service.process.wait(10) == -signal.SIGKILL
    service.kill()


def temp_folders(model_dir: Path) -> list[Path]:
    return sorted(model_dir.glob(f"{NAME}/.tmp-*"))


def assert_store_consistent(service: ServiceProcess, model_dir: Path, versions: list[int], before: dict[str, Any]) -> None:
    """Only complete versions are listed, each folder listed is whole, and the old version predicts as before."""
    info = service.http.get(f"/models/{NAME}").json()
    assert info["versions"] == versions, info
    assert [m["name"] for m in service.http.get("/models").json()] == [NAME]
    listed = sorted(int(p.name) for p in (model_dir / NAME).iterdir() if not p.name.startswith("."))
    assert listed == versions
    for version in versions:
        assert (model_dir / NAME / str(version) / "meta.json").exists()
    again = service.http.post(f"/models/{NAME}/predict", json={"sequences": SEQUENCES, "version": 1})
    assert again.status_code == 200, again.text
    assert again.json() == before


def assert_interrupted(service: ServiceProcess, job_id: str) -> None:
    job = service.http.get(f"/jobs/{job_id}").json()
    assert job["status"] == "failed", job
    assert job["error"]["code"] == "interrupted", job
    assert "stopped" in job["error"]["message"]
    assert job["version"] is None


def test_kill_9_while_training_and_while_saving_loses_nothing(start_service: Start, tmp_path: Path) -> None:  # noqa: F811
    model_dir = tmp_path / "models"
    first = start(start_service, model_dir, "first")
    assert first.train(NAME, **SMALL, epochs=1)["version"] == 1
    before = first.http.post(f"/models/{NAME}/predict", json={"sequences": SEQUENCES, "version": 1}).json()

    # 1. kill -9 in the middle of training (a job is running, past its first epoch).
    training = submit(first, **LONG)
    wait_until(lambda: first.http.get(f"/jobs/{training}").json()["epoch"] >= 1, 60, "the first epoch")
    kill_9(first)

    second = start(start_service, model_dir, "second")
    assert_store_consistent(second, model_dir, [1], before)
    assert_interrupted(second, training)

    # 2. kill -9 in the middle of saving: the version's temporary folder exists, the rename has not happened.
    saving = submit(second, **SMALL, epochs=1)
    seen = wait_until(lambda: temp_folders(model_dir), 60, "a .tmp-* version folder", poll=0.002)
    kill_9(second)
    assert seen and not (model_dir / NAME / "2").exists()

    third = start(start_service, model_dir, "third")
    assert_store_consistent(third, model_dir, [1], before)
    assert_interrupted(third, saving)
    # The store still works: the next version is 2, complete, and version 1 is unchanged.
    assert third.train(NAME, **SMALL, epochs=1)["version"] == 2
    assert_store_consistent(third, model_dir, [1, 2], before)
    assert third.terminate() == 0, third.log_tail()


def test_sigterm_finishes_the_request_cancels_the_job_and_exits_0(start_service: Start, tmp_path: Path) -> None:  # noqa: F811
    model_dir = tmp_path / "models"
    service = start(start_service, model_dir, "graceful")
    service.train(NAME, **SMALL, epochs=1)
    job_id = submit(service, **LONG)
    wait_until(lambda: service.http.get(f"/jobs/{job_id}").json()["status"] == "running", 60, "the job to run")

    # A prediction whose body is still arriving when SIGTERM comes: it is in flight, and must complete.
    body = json.dumps({"sequences": SEQUENCES * 200}).encode()
    half = len(body) // 2
    sent_first_half = threading.Event()
    result: dict[str, Any] = {}

    def slow_body() -> Iterator[bytes]:
        yield body[:half]
        sent_first_half.set()
        time.sleep(1.0)
        yield body[half:]

    def predict() -> None:
        try:
            with httpx.Client(base_url=service.url, timeout=60) as http:
                response = http.post(f"/models/{NAME}/predict", content=slow_body(), headers={"content-type": "application/json"})
            result["status"] = response.status_code
            result["count"] = len(response.json().get("predictions", []))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            result["error"] = repr(exc)

    client = threading.Thread(target=predict)
    client.start()
    assert sent_first_half.wait(30)
    time.sleep(0.2)  # the server has the request's headers and first half
    started = time.monotonic()
    assert service.terminate() == 0, service.log_tail()
    client.join(30)
    assert result == {"status": 200, "count": len(SEQUENCES) * 200}, result
    assert time.monotonic() - started < 30
    assert "Application shutdown complete" in service.log_path.read_text()

    record = json.loads((model_dir / ".jobs" / f"{job_id}.json").read_text())
    assert record["status"] == "cancelled", record
    assert record["version"] is None
    assert temp_folders(model_dir) == []
    assert versions_on_disk(model_dir, NAME) == ["1"]
