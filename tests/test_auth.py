"""API key: with ``API_KEY`` set, routes that change state need ``Authorization: Bearer <key>``; predictions,
sessions and reads stay open unless ``API_KEY_ALL=1``; ``/health/*`` is always open. Every refusal is a
401 in the error format, and the key comparison is constant-time (``secrets.compare_digest``)."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

import service.auth
from tests.test_validation import assert_error

KEY = "s3cret-key"
GOOD = {"Authorization": f"Bearer {KEY}"}
WRONG_HEADERS: list[dict[str, str]] = [
    {},
    {"Authorization": "Bearer wrong"},
    {"Authorization": f"Bearer {KEY}x"},
    {"Authorization": f"Bearer {KEY[:-1]}"},
    {"Authorization": KEY},
    {"Authorization": f"Basic {KEY}"},
    {"Authorization": "Bearer "},
]
TRAIN = {"architecture": "lstm", "dataset": "noisy_trend", "epochs": 1, "params": {"units": 2}}

Call = Callable[[TestClient, dict[str, str]], httpx.Response]

WRITES: dict[str, Call] = {
    "train": lambda c, h: c.post("/models/m-lstm/train", json=TRAIN, headers=h),
    "load": lambda c, h: c.post("/models/up/load", files={"file": ("m.keras", b"not a zip")}, headers=h),
    "delete": lambda c, h: c.delete("/models/ghost", headers=h),
    "compare": lambda c, h: c.post("/compare", json={"dataset": "noisy_trend", "epochs": 1}, headers=h),
    "cancel": lambda c, h: c.delete("/jobs/0123456789abcdef", headers=h),
}
READS: dict[str, Call] = {
    "predict": lambda c, h: c.post("/models/m-lstm/predict", json={"sequences": [[0.1, 0.2]]}, headers=h),
    "session": lambda c, h: c.post("/models/m-lstm/sessions", headers=h),
    "models": lambda c, h: c.get("/models", headers=h),
    "model": lambda c, h: c.get("/models/m-lstm", headers=h),
    "architectures": lambda c, h: c.get("/architectures", headers=h),
    "datasets": lambda c, h: c.get("/datasets", headers=h),
    "jobs": lambda c, h: c.get("/jobs", headers=h),
    "job": lambda c, h: c.get("/jobs/0123456789abcdef", headers=h),
    "step": lambda c, h: c.post("/sessions/nope/step", json={"values": [0.1]}, headers=h),
}
#: Status of each write when the key is right (the requests are built to fail fast after the check).
AUTHORIZED_WRITE_STATUS = {"train": 202, "load": 422, "delete": 404, "compare": 202, "cancel": 404}


def assert_unauthorized(response: httpx.Response) -> None:
    assert_error(response, 401, "unauthorized")
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers.get("www-authenticate") == "Bearer"


@pytest.fixture
def keyed(app_client: Callable[..., TestClient], trained_dir: Path, tmp_path: Path) -> Callable[..., TestClient]:
    """An app with API_KEY on a copy of the trained models (writes here must not touch the shared ones)."""
    import shutil

    model_dir = tmp_path / "keyed-models"
    shutil.copytree(trained_dir, model_dir, ignore=shutil.ignore_patterns(".jobs"))

    def open_app(**overrides: Any) -> TestClient:
        return app_client(model_dir, api_key=KEY, max_epochs=1, **overrides)

    return open_app


@pytest.mark.parametrize("route", list(WRITES))
def test_writes_need_the_key(keyed: Callable[..., TestClient], route: str) -> None:
    client = keyed()
    for headers in WRONG_HEADERS:
        assert_unauthorized(WRITES[route](client, headers))
    response = WRITES[route](client, GOOD)
    assert response.status_code == AUTHORIZED_WRITE_STATUS[route], response.text
    if response.status_code == 202:
        client.delete(f"/jobs/{response.json()['job_id']}", headers=GOOD)


def test_reads_predictions_and_sessions_stay_open(keyed: Callable[..., TestClient]) -> None:
    client = keyed()
    for route, call in READS.items():
        response = call(client, {})
        assert response.status_code != 401, (route, response.text)
        assert response.status_code < 500, (route, response.text)
    session_id = client.post("/models/m-lstm/sessions").json()["session_id"]
    assert client.post(f"/sessions/{session_id}/step", json={"values": [0.3]}).status_code == 200
    assert client.post(f"/sessions/{session_id}/reset").status_code == 200
    assert client.delete(f"/sessions/{session_id}").status_code == 204


def test_api_key_all_guards_reads_too_but_not_health(keyed: Callable[..., TestClient]) -> None:
    client = keyed(api_key_all=True)
    for route, call in {**READS, **WRITES}.items():
        for headers in WRONG_HEADERS:
            response = call(client, headers)
            assert response.status_code == 401, (route, headers, response.text)
            assert_unauthorized(response)
    for route, call in READS.items():
        assert call(client, GOOD).status_code not in (401, 500), route
    for path in ("/health/live", "/health/ready"):
        assert client.get(path).status_code == 200


def test_no_key_configured_means_everything_is_open(app_client: Callable[..., TestClient]) -> None:
    client = app_client()
    assert client.delete("/models/ghost").status_code == 404
    assert client.get("/models", headers={"Authorization": "Bearer anything"}).status_code == 200


def test_key_comparison_is_constant_time(keyed: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch) -> None:
    """Every check goes through ``secrets.compare_digest`` (no ``==`` that returns at the first differing byte)."""
    calls: list[tuple[bytes, bytes]] = []
    real = service.auth.secrets.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(service.auth.secrets, "compare_digest", recording)
    client = keyed()
    assert_unauthorized(WRITES["delete"](client, {"Authorization": "Bearer wrong"}))
    assert WRITES["delete"](client, GOOD).status_code == 404
    assert calls == [(b"wrong", KEY.encode()), (KEY.encode(), KEY.encode())]
