"""Concurrency against a real process: 16 clients predict while the model is retrained (every answer comes
from one complete version, bit for bit), and deleting a model under live sessions answers their next step
with 404, never 500."""

import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.process import SEQUENCES, ServiceProcess, service_env

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CLIENTS = 16
TRAIN = {"architecture": "lstm", "dataset": "noisy_trend", "params": {"units": 4}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    root = tmp_path_factory.mktemp("concurrency")
    (root / "cwd").mkdir()
    service = ServiceProcess(root / "cwd", service_env(root / "models", DEMO_MODEL="false", LOG_LEVEL="warning"), "conc")
    try:
        service.wait_ready()
        yield service
    finally:
        service.kill()


def probabilities(body: dict[str, Any]) -> list[float]:
    return [p["probability"] for p in body["predictions"]]


def test_predictions_during_retraining_come_from_one_complete_version(server: ServiceProcess) -> None:
    server.train("live", **TRAIN, epochs=1)
    job_id = server.http.post("/models/live/train", json={**TRAIN, "epochs": 3, "seed": 7}).json()["job_id"]
    done = threading.Event()
    answers: list[tuple[int, list[float]]] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            extra = 0
            while extra < 5:  # keep going until the job has finished, then a few more
                try:
                    response = http.post("/models/live/predict", json={"sequences": SEQUENCES})
                except httpx.HTTPError as exc:
                    with lock:
                        errors.append(repr(exc))
                    continue
                with lock:
                    if response.status_code != 200:
                        errors.append(f"{response.status_code} {response.text[:200]}")
                    else:
                        body = response.json()
                        answers.append((body["version"], probabilities(body)))
                if done.is_set():
                    extra += 1

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    job = server.wait_job(job_id)
    done.set()
    for thread in threads:
        thread.join(60)
    assert job["version"] == 2

    assert errors == []
    expected = {
        version: probabilities(server.http.post("/models/live/predict", json={"sequences": SEQUENCES, "version": version}).json())
        for version in (1, 2)
    }
    assert expected[1] != expected[2]
    versions = Counter(version for version, _ in answers)
    assert set(versions) <= {1, 2} and versions[2] >= CLIENTS, versions
    for version, probs in answers:
        assert probs == expected[version], (version, probs, expected[version])


def test_deleting_a_model_under_live_sessions_answers_404(server: ServiceProcess) -> None:
    server.train("doomed", **TRAIN, epochs=1)
    sessions = [server.http.post("/models/doomed/sessions").json()["session_id"] for _ in range(8)]
    statuses: list[int] = []
    lock = threading.Lock()
    deleted = threading.Event()

    def stepper(session_id: str) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            after = 0
            while after < 3:
                response = http.post(f"/sessions/{session_id}/step", json={"values": [0.1, 0.2]})
                with lock:
                    statuses.append(response.status_code)
                if response.status_code == 404:
                    assert response.json()["error"]["code"] == "model_deleted", response.text
                if deleted.is_set():
                    after += 1

    threads = [threading.Thread(target=stepper, args=(s,)) for s in sessions]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    assert server.http.delete("/models/doomed").status_code == 204
    deleted.set()
    for thread in threads:
        thread.join(30)
    assert set(statuses) <= {200, 404}, Counter(statuses)
    assert statuses.count(404) >= len(sessions)
    for session_id in sessions:
        response = server.http.post(f"/sessions/{session_id}/step", json={"values": [0.3]})
        assert response.status_code == 404, response.text
    assert server.http.get("/models/doomed").status_code == 404
    assert server.http.get("/health/ready").status_code == 200
