"""Shared fixtures: apps on temporary model folders, driven over HTTP with httpx (TestClient).

Training is the slow part, so one session-scoped app trains one small model per architecture once;
tests that need a fresh store make their own app on ``tmp_path``.
"""

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings
from tests.process import Start, process_factory

#: Small and fast, yet big enough to learn the built-in datasets a little.
SMALL_PARAMS = {"units": 8, "embedding_dim": 8, "dense_units": 8}

#: Model name -> (architecture, built-in dataset) trained once per test session.
TRAINED = {
    "m-lstm": ("lstm", "noisy_trend"),
    "m-stateful": ("stateful_lstm", "noisy_trend"),
    "m-td": ("td_dense_lstm", "noisy_trend"),
    "m-emb": ("embedding_lstm", "token_pattern"),
    "m-bi": ("embedding_bilstm", "token_pattern"),
}


def make_settings(model_dir: Path, **overrides: Any) -> Settings:
    """Settings for a test app: its own model folder, no demo model, no gRPC port (many apps run at once), other
    values as given."""
    return Settings(**{"model_dir": model_dir, "demo_model": False, "grpc_port": 0, **overrides})


@pytest.fixture
def app_client(tmp_path: Path) -> Iterator[Callable[..., TestClient]]:
    """Factory of started apps (lifespan run) on ``tmp_path/models``; all are closed at test end."""
    opened: list[TestClient] = []

    def open_client(model_dir: Path | None = None, **overrides: Any) -> TestClient:
        client = TestClient(create_app(make_settings(model_dir or tmp_path / "models", **overrides)))
        client.__enter__()
        opened.append(client)
        return client

    yield open_client
    for client in reversed(opened):
        client.__exit__(None, None, None)


@pytest.fixture
def client(app_client: Callable[..., TestClient]) -> TestClient:
    """A started app on an empty model folder."""
    return app_client()


def wait_for_job(client: TestClient, job_id: str, timeout: float = 180.0) -> dict[str, Any]:
    """Poll ``GET /jobs/{id}`` until the job has finished; return its record."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


def train(client: TestClient, name: str, **body: Any) -> dict[str, Any]:
    """Train through the API and wait; asserts the job succeeded and returns its record."""
    body.setdefault("epochs", 2)
    body.setdefault("params", dict(SMALL_PARAMS))
    response = client.post(f"/models/{name}/train", json=body)
    assert response.status_code == 202, response.text
    job = wait_for_job(client, response.json()["job_id"])
    assert job["status"] == "succeeded", job
    return job


@pytest.fixture(scope="session")
def trained_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder holding one small trained model per architecture (see ``TRAINED``)."""
    model_dir = tmp_path_factory.mktemp("trained") / "models"
    with TestClient(create_app(make_settings(model_dir))) as client:
        for name, (architecture, dataset) in TRAINED.items():
            train(client, name, architecture=architecture, dataset=dataset, epochs=2)
    return model_dir


@pytest.fixture(scope="module")
def trained(trained_dir: Path) -> Iterator[TestClient]:
    """A started app serving the models of ``trained_dir`` (read-only use: tests must not change them)."""
    with TestClient(create_app(make_settings(trained_dir))) as client:
        yield client


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[Start]:
    """Starts real ``python -m service`` processes; every one still running at the test's end is killed."""
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    start, started = process_factory(workdir)
    try:
        yield start
    finally:
        for service in started:
            service.kill()
