"""Operations: liveness, readiness, Prometheus /metrics, and the OpenAPI docs."""

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import TRAINED
from tests.test_sessions import store_settings  # noqa: F401 - the fixture (memory and Redis)


def _sample(text: str, name: str, labels: str = "") -> float | None:
    """Value of one Prometheus sample ``name{labels}`` in a text exposition, or None when absent."""
    pattern = rf"^{re.escape(name)}{re.escape(labels)} (\S+)$"
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else None


def test_live_and_ready(client: TestClient) -> None:
    live = client.get("/health/live")
    assert live.status_code == 200
    assert live.json() == {"status": "ok"}
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok"}


def test_not_ready_while_the_store_is_loading(client: TestClient) -> None:
    client.app.state.registry.ready = False  # as it is until ModelRegistry.open has loaded every latest version
    response = client.get("/health/ready")
    assert response.status_code == 503
    assert response.json() == {"status": "loading"}
    assert client.get("/health/live").json() == {"status": "ok"}


def test_metrics_is_prometheus_text(client: TestClient) -> None:
    client.get("/health/live")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert "# HELP lstm_serve_http_requests_total" in text
    assert "# TYPE lstm_serve_http_requests_total counter" in text
    assert "# TYPE lstm_serve_models gauge" in text
    assert _sample(text, "lstm_serve_models") == 0.0
    assert _sample(text, "lstm_serve_http_requests_total", '{method="GET",route="/health/live",status="200"}') == 1.0


def test_metrics_count_predicted_sequences(trained: TestClient) -> None:
    name = "m-lstm"
    before = _sample(trained.get("/metrics").text, "lstm_serve_predicted_sequences_total", f'{{model="{name}"}}') or 0.0
    response = trained.post(f"/models/{name}/predict", json={"sequences": [[0.1, 0.2], [0.3], [0.5, -0.5, 1.0]]})
    assert response.status_code == 200
    text = trained.get("/metrics").text
    assert _sample(text, "lstm_serve_predicted_sequences_total", f'{{model="{name}"}}') == before + 3
    assert _sample(text, "lstm_serve_models") == float(len(TRAINED))
    assert _sample(text, "lstm_serve_jobs", '{status="running"}') == 0.0
    # Route templates, not raw paths, label the request counter.
    assert 'route="/models/{name}/predict"' in text


def test_metrics_do_not_count_failed_predictions(trained: TestClient) -> None:
    name = "m-td"
    label = f'{{model="{name}"}}'
    before = _sample(trained.get("/metrics").text, "lstm_serve_predicted_sequences_total", label) or 0.0
    assert trained.post(f"/models/{name}/predict", json={"sequences": [["x"]]}).status_code == 422
    after = _sample(trained.get("/metrics").text, "lstm_serve_predicted_sequences_total", label) or 0.0
    assert after == before


def test_openapi_and_docs(client: TestClient) -> None:
    spec = client.get("/openapi.json")
    assert spec.status_code == 200
    body = spec.json()
    assert body["info"]["title"] == "lstm-serve"
    paths = body["paths"]
    for path in (
        "/architectures",
        "/datasets",
        "/models",
        "/models/{name}",
        "/models/{name}/train",
        "/models/{name}/load",
        "/models/{name}/predict",
        "/jobs/{job_id}",
        "/health/live",
        "/health/ready",
        "/metrics",
    ):
        assert path in paths, path
    assert "post" in paths["/models/{name}/predict"]
    assert "delete" in paths["/jobs/{job_id}"]
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "text/html" in docs.headers["content-type"]
    assert "swagger" in docs.text.lower()


def test_session_metrics_move_as_sessions_are_created_stepped_and_expire(
    app_client: Callable[..., TestClient], trained_dir: Path, store_settings: dict[str, Any]  # noqa: F811
) -> None:
    client = app_client(trained_dir, session_reap_interval_s=0.2, **store_settings)

    def sample(name: str, labels: str = "") -> float:
        return _sample(client.get("/metrics").text, name, labels) or 0.0

    assert sample("lstm_serve_sessions_live", '{model="m-lstm"}') == 0.0
    short = client.post("/models/m-lstm/sessions", json={"ttl_s": 1}).json()["session_id"]
    kept = client.post("/models/m-lstm/sessions").json()["session_id"]
    client.post("/models/m-lstm/sessions", json={"fork_of": kept})
    dropped = client.post("/models/m-td/sessions").json()["session_id"]
    assert sample("lstm_serve_sessions_live", '{model="m-lstm"}') == 3.0
    assert sample("lstm_serve_sessions_live", '{model="m-td"}') == 1.0
    assert sample("lstm_serve_sessions_created_total", '{model="m-lstm"}') == 3.0

    assert client.post(f"/sessions/{kept}/step", json={"values": [0.1, 0.2, 0.3]}).status_code == 200
    client.post("/models/m-lstm/predict", json={"sequences": [[0.1], [0.2]]})
    assert sample("lstm_serve_session_steps_total", '{model="m-lstm"}') == 3.0
    assert sample("lstm_serve_batch_size_requests_count", '{kind="step"}') == 1.0
    assert sample("lstm_serve_batch_size_requests_count", '{kind="predict"}') == 1.0
    assert sample("lstm_serve_session_lock_wait_seconds_count") == 1.0

    assert client.delete(f"/sessions/{dropped}").status_code == 204
    assert sample("lstm_serve_sessions_deleted_total") == 1.0
    assert _sample(client.get("/metrics").text, "lstm_serve_sessions_live", '{model="m-td"}') is None

    deadline = time.monotonic() + 10
    while sample("lstm_serve_sessions_expired_total") < 1.0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sample("lstm_serve_sessions_expired_total") == 1.0
    assert sample("lstm_serve_sessions_live", '{model="m-lstm"}') == 2.0
    assert client.get(f"/sessions/{short}").status_code == 404
    assert sample("lstm_serve_session_store_errors_total", '{code="state_store_unavailable"}') == 0.0
